import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Human approvals of risky grants: a token exchange the policy answers with
 * `requires_approval` leaves a pending approval holding the exact `authorization_details`;
 * an operator approves or denies it; an approved one buys one credential, once.
 */
export class Approvals1764360000000 implements MigrationInterface {
  name = 'Approvals1764360000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE approvals (
        id uuid PRIMARY KEY,
        task_id uuid NOT NULL REFERENCES tasks (id),
        agent_id text NOT NULL,
        connector_id text NOT NULL,
        authorization_details jsonb NOT NULL,
        reasons jsonb NOT NULL,
        policy_version text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
        requested_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        decided_at timestamptz,
        decided_by text,
        note text,
        used_at timestamptz
      )`);
    await q.query(`CREATE INDEX approvals_pending ON approvals (requested_at) WHERE status = 'pending'`);
    await q.query(`CREATE INDEX approvals_task ON approvals (task_id)`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE ON approvals TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS approvals');
  }
}
