import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `row_integrity_backfill_progress`: the rows the upgrade's tagging (the first start after the
 * row-integrity migrations, `libs/grants/src/row-integrity-backfill.ts`) has tagged so far, per
 * table. The tagging commits in batches (a short transaction each, its rows locked only for it)
 * rather than in one transaction over every untagged row; each batch adds its count here in the
 * same transaction as its tags, so that a start that dies half-way leaves tags and counts that
 * agree, and the next start resumes with the rows still untagged and reports, in its one
 * `row_integrity.backfilled` event, the exact counts over every run. The rows are deleted when
 * the marker (`row_integrity_backfill`) is written. A new, empty table: no lock on any other.
 */
export class RowIntegrityBackfillProgress1764652000000 implements MigrationInterface {
  name = 'RowIntegrityBackfillProgress1764652000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE IF NOT EXISTS row_integrity_backfill_progress (
        tagged_table text PRIMARY KEY,
        tagged bigint NOT NULL CHECK (tagged >= 0)
      )`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE, DELETE ON row_integrity_backfill_progress TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS row_integrity_backfill_progress');
  }
}
