import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Issue 13: per-user connected accounts and verified subjects.
 *
 * - `identity_providers`: the trusted issuers of users' tokens (issuer, JWKS URI, audience)
 *   and the orchestrators trusted to assert users of that issuer without a token.
 * - `connect_links`: one-time, short-lived links that connect one user to one connector
 *   (the PKCE verifier sealed; the link, state and browser-binding values stored hashed).
 * - `connected_accounts`: one row per (connector, user): the user's upstream tokens sealed,
 *   their scopes, expiry and status (`active`, `broken` with the upstream's error).
 * - `tasks.user_issuer`, `tasks.user_subject`: the verified user a task acts for.
 * Credentials carry the user in their JWT (`sub`, with `act.sub` the agent); the gateway reads it from the task.
 */
export class ConnectedAccounts1764480000000 implements MigrationInterface {
  name = 'ConnectedAccounts1764480000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE identity_providers (
        issuer text PRIMARY KEY,
        jwks_uri text NOT NULL,
        audience text NOT NULL,
        asserting_orchestrators text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`
      CREATE TABLE connect_links (
        id text PRIMARY KEY,
        connector_id text NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
        user_issuer text NOT NULL,
        user_subject text NOT NULL,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        opened_at timestamptz,
        state_hash text UNIQUE,
        browser_hash text,
        verifier_sealed bytea,
        used_at timestamptz
      )`);
    await q.query('CREATE INDEX connect_links_expires_at ON connect_links (expires_at)');
    await q.query(`
      CREATE TABLE connected_accounts (
        id uuid PRIMARY KEY,
        connector_id text NOT NULL REFERENCES connectors(id) ON DELETE CASCADE,
        user_issuer text NOT NULL,
        user_subject text NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'broken')),
        scopes text[] NOT NULL DEFAULT '{}',
        tokens_sealed bytea NOT NULL,
        access_expires_at timestamptz,
        broken_error text,
        refreshes integer NOT NULL DEFAULT 0,
        connected_at timestamptz NOT NULL DEFAULT now(),
        refreshed_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (connector_id, user_issuer, user_subject)
      )`);
    await q.query('CREATE INDEX connected_accounts_user ON connected_accounts (user_issuer, user_subject)');
    await q.query('ALTER TABLE tasks ADD COLUMN user_issuer text, ADD COLUMN user_subject text');
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE, DELETE ON identity_providers, connect_links, connected_accounts TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE tasks DROP COLUMN user_issuer, DROP COLUMN user_subject');
    await q.query('DROP TABLE connected_accounts');
    await q.query('DROP TABLE connect_links');
    await q.query('DROP TABLE identity_providers');
  }
}
