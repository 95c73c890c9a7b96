import { MigrationInterface, QueryRunner } from 'typeorm';

/** The genesis `prev_hash` of the audit chain: 64 zeros. */
export const AUDIT_GENESIS_HASH = '0'.repeat(64);

/**
 * The first schema of Writ: identities, connectors, tasks, issued tokens, signing keys,
 * admin tokens, client-assertion replay cache, policies and the append-only audit chain.
 */
export class InitialSchema1764340000000 implements MigrationInterface {
  name = 'InitialSchema1764340000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE agents (
        id text PRIMARY KEY,
        name text NOT NULL,
        description text,
        status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        jwks jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`
      CREATE TABLE orchestrators (
        id text PRIMARY KEY,
        name text NOT NULL,
        description text,
        status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
        jwks jsonb NOT NULL,
        allowed_agents text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`
      CREATE TABLE connectors (
        id text PRIMARY KEY,
        name text NOT NULL,
        base_url text NOT NULL,
        operations jsonb NOT NULL,
        credential_type text,
        credential_sealed bytea,
        credential_fingerprint text,
        credential_set_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`
      CREATE TABLE tasks (
        id uuid PRIMARY KEY,
        agent_id text NOT NULL,
        orchestrator_id text NOT NULL,
        purpose text NOT NULL,
        allowed jsonb NOT NULL,
        on_behalf_of text,
        metadata jsonb NOT NULL DEFAULT '{}',
        status text NOT NULL CHECK (status IN ('active', 'completed', 'failed', 'expired', 'revoked')),
        status_reason text,
        task_token_jti text NOT NULL UNIQUE,
        grants_issued integer NOT NULL DEFAULT 0,
        refusals integer NOT NULL DEFAULT 0,
        out_of_purpose_requests integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        ended_at timestamptz
      )`);
    await q.query(`CREATE INDEX tasks_active_expiry ON tasks (expires_at) WHERE status = 'active'`);
    await q.query(`CREATE INDEX tasks_agent ON tasks (agent_id, created_at)`);
    await q.query(`CREATE INDEX tasks_orchestrator ON tasks (orchestrator_id, created_at)`);
    await q.query(`
      CREATE TABLE access_tokens (
        jti text PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('connector', 'tasks')),
        client_id text NOT NULL,
        subject text NOT NULL,
        task_id uuid REFERENCES tasks (id),
        connector_id text,
        action text,
        risk text,
        authorization_details jsonb,
        scope text,
        cnf_jkt text,
        policy_version text,
        max_uses integer,
        uses integer NOT NULL DEFAULT 0,
        issued_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz,
        revoked_reason text
      )`);
    await q.query(`CREATE INDEX access_tokens_task ON access_tokens (task_id)`);
    await q.query(`CREATE INDEX access_tokens_client ON access_tokens (client_id) WHERE revoked_at IS NULL`);
    await q.query(`CREATE INDEX access_tokens_connector ON access_tokens (connector_id) WHERE revoked_at IS NULL`);
    await q.query(`
      CREATE TABLE client_assertion_jtis (
        client_id text NOT NULL,
        jti text NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (client_id, jti)
      )`);
    await q.query(`CREATE INDEX client_assertion_jtis_expiry ON client_assertion_jtis (expires_at)`);
    await q.query(`
      CREATE TABLE signing_keys (
        kid text PRIMARY KEY,
        alg text NOT NULL,
        public_jwk jsonb NOT NULL,
        private_sealed bytea NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'retiring', 'retired')),
        created_at timestamptz NOT NULL DEFAULT now(),
        retired_at timestamptz
      )`);
    await q.query(`CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (status) WHERE status = 'active'`);
    await q.query(`
      CREATE TABLE admin_tokens (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        token_hash text NOT NULL UNIQUE,
        created_by text,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at timestamptz
      )`);
    await q.query(`
      CREATE TABLE policies (
        version text PRIMARY KEY,
        bundle bytea NOT NULL,
        data jsonb,
        source text NOT NULL,
        loaded_by text NOT NULL,
        loaded_at timestamptz NOT NULL DEFAULT now(),
        active boolean NOT NULL DEFAULT false
      )`);
    await q.query(`CREATE UNIQUE INDEX policies_one_active ON policies (active) WHERE active`);
    await q.query(`
      CREATE TABLE audit_events (
        seq bigint PRIMARY KEY,
        id uuid NOT NULL UNIQUE,
        occurred_at timestamptz NOT NULL,
        type text NOT NULL,
        outcome text NOT NULL,
        actor_type text NOT NULL,
        actor_id text,
        agent_id text,
        task_id text,
        connector_id text,
        data jsonb NOT NULL,
        prev_hash text NOT NULL,
        hash text NOT NULL
      )`);
    await q.query(`CREATE INDEX audit_events_task ON audit_events (task_id, seq) WHERE task_id IS NOT NULL`);
    await q.query(`CREATE INDEX audit_events_agent ON audit_events (agent_id, seq) WHERE agent_id IS NOT NULL`);
    await q.query(`CREATE INDEX audit_events_connector ON audit_events (connector_id, seq) WHERE connector_id IS NOT NULL`);
    await q.query(`CREATE INDEX audit_events_type ON audit_events (type, seq)`);
    await q.query(`CREATE INDEX audit_events_time ON audit_events (occurred_at)`);
    await q.query(`
      CREATE TABLE audit_chain_head (
        id smallint PRIMARY KEY CHECK (id = 1),
        seq bigint NOT NULL,
        hash text NOT NULL
      )`);
    await q.query(`INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, '${AUDIT_GENESIS_HASH}')`);
    // Append-only: rows of the chain are never changed or removed, whoever asks.
    await q.query(`
      CREATE FUNCTION writ_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`);
    await q.query(`
      CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
      FOR EACH ROW EXECUTE FUNCTION writ_audit_append_only()`);
    await q.query(`
      CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
      FOR EACH STATEMENT EXECUTE FUNCTION writ_audit_append_only()`);
  }

  async down(q: QueryRunner): Promise<void> {
    for (const table of [
      'audit_chain_head',
      'audit_events',
      'policies',
      'admin_tokens',
      'signing_keys',
      'client_assertion_jtis',
      'access_tokens',
      'tasks',
      'connectors',
      'orchestrators',
      'agents',
    ]) {
      await q.query(`DROP TABLE IF EXISTS ${table}`);
    }
    await q.query('DROP FUNCTION IF EXISTS writ_audit_append_only()');
  }
}
