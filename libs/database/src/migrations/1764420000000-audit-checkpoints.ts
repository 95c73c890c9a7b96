import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Signed checkpoints of the audit chain head (docs/audit.md): each row names a `seq`, the
 * chain's `hash` there, the digest of the previous checkpoint, when and with which key it
 * was signed, and its Ed25519 signature. The signing key is derived from the master key and
 * never stored here, so a database superuser who rewrites events cannot sign a matching
 * checkpoint. Append-only like `audit_events`; `writ_service` may only read and insert.
 * One row per `seq`: instances that race to sign the same head insert it once.
 */
export class AuditCheckpoints1764420000000 implements MigrationInterface {
  name = 'AuditCheckpoints1764420000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE audit_checkpoints (
        seq bigint PRIMARY KEY,
        hash text NOT NULL,
        prev text,
        signed_at timestamptz NOT NULL,
        kid text NOT NULL,
        signature text NOT NULL
      )`);
    await q.query(`
      CREATE FUNCTION writ_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`);
    await q.query(`
      CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
      FOR EACH ROW EXECUTE FUNCTION writ_append_only()`);
    await q.query(`
      CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
      FOR EACH STATEMENT EXECUTE FUNCTION writ_append_only()`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT ON audit_checkpoints TO writ_service;
          REVOKE UPDATE, DELETE, TRUNCATE ON audit_checkpoints FROM writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS audit_checkpoints');
    await q.query('DROP FUNCTION IF EXISTS writ_append_only()');
  }
}
