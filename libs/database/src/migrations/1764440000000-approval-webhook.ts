import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Deliveries of the approval webhook: one row per pending approval announced, claimed by one
 * admin instance at a time (a conditional UPDATE with `FOR UPDATE SKIP LOCKED`), so each
 * approval is delivered once across instances, retried with backoff until it is delivered,
 * given up (`failed`), or no longer worth sending (`skipped`: decided or expired meanwhile).
 */
export class ApprovalWebhook1764440000000 implements MigrationInterface {
  name = 'ApprovalWebhook1764440000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE approval_webhook_deliveries (
        approval_id uuid PRIMARY KEY REFERENCES approvals (id) ON DELETE CASCADE,
        id uuid NOT NULL UNIQUE,
        status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'skipped')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        claimed_until timestamptz,
        last_status integer,
        last_error text,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
      )`);
    await q.query(`CREATE INDEX approval_webhook_due ON approval_webhook_deliveries (next_attempt_at) WHERE status = 'pending'`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE ON approval_webhook_deliveries TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS approval_webhook_deliveries');
  }
}
