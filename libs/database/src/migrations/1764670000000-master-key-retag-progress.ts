import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `master_key_retag_progress`: the rows the re-tag after a master key rotation
 * (`retagUnderCurrentMasterKey`, `libs/grants/src/row-integrity-backfill.ts`) has tagged again
 * under the current key so far, per table. The re-tag commits in batches (a short transaction
 * each, its rows locked only for it) rather than in one transaction over every tagged row; each
 * batch adds its count here in the same transaction as its tags, so that a start that dies
 * half-way leaves tags and counts that agree, and the next start resumes with the rows still
 * under a previous key and reports, in its `master_key.rewrapped` event, the exact counts over
 * every run. The rows are deleted in the transaction that records that event. A new, empty
 * table: no lock on any other.
 */
export class MasterKeyRetagProgress1764670000000 implements MigrationInterface {
  name = 'MasterKeyRetagProgress1764670000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE IF NOT EXISTS master_key_retag_progress (
        tagged_table text PRIMARY KEY,
        retagged bigint NOT NULL CHECK (retagged >= 0)
      )`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE, DELETE ON master_key_retag_progress TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS master_key_retag_progress');
  }
}
