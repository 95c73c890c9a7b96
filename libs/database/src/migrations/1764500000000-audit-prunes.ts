import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Audit retention (docs/operations.md#retention): `audit_prunes` holds the signed prune
 * markers, one per pruned prefix of the chain (`up_to_seq`, the chain's hash there, the
 * digest of the checkpoint at that seq, the SHA-256 of the exported events, Ed25519 signature
 * by the checkpoint key). Append-only like the other audit tables; `writ_service` may only
 * read it (verification), never insert: only the owner prunes.
 *
 * The append-only trigger of `audit_events` gets one narrow exception: a DELETE by the
 * table's owner (or a superuser) of a row at or below the `up_to_seq` of a marker inserted in
 * the same transaction. Everyone else, and every UPDATE or TRUNCATE, is still refused. The
 * trigger is a guard against accidents, not the proof: the proof is the marker's signature,
 * which verification checks (a DBA's own marker does not verify).
 */
export class AuditPrunes1764500000000 implements MigrationInterface {
  name = 'AuditPrunes1764500000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE audit_prunes (
        up_to_seq bigint PRIMARY KEY,
        up_to_hash text NOT NULL,
        checkpoint_digest text NOT NULL,
        exported_sha256 text NOT NULL,
        events bigint NOT NULL,
        prev text,
        pruned_at timestamptz NOT NULL,
        actor text NOT NULL,
        kid text NOT NULL,
        signature text NOT NULL
      )`);
    await q.query(`
      CREATE TRIGGER audit_prunes_append_only BEFORE UPDATE OR DELETE ON audit_prunes
      FOR EACH ROW EXECUTE FUNCTION writ_append_only()`);
    await q.query(`
      CREATE TRIGGER audit_prunes_no_truncate BEFORE TRUNCATE ON audit_prunes
      FOR EACH STATEMENT EXECUTE FUNCTION writ_append_only()`);
    // xmin of a row inserted by this (top-level) transaction is its xid: the marker must be
    // committed together with the deletion it allows.
    await q.query(`
      CREATE OR REPLACE FUNCTION writ_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'DELETE'
           AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
           AND EXISTS (SELECT 1 FROM audit_prunes p
                        WHERE p.up_to_seq >= OLD.seq
                          AND p.xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text) THEN
          RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT ON audit_prunes TO writ_service;
          REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_prunes FROM writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE OR REPLACE FUNCTION writ_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
      END $$`);
    await q.query('DROP TABLE IF EXISTS audit_prunes');
  }
}
