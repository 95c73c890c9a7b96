import { MigrationInterface, QueryRunner } from 'typeorm';

const TAGGED = ['tasks', 'agents', 'orchestrators', 'admin_tokens'];

/**
 * `integrity_tag` on `tasks`, `agents`, `orchestrators` and `admin_tokens`: an HMAC under a subkey of the master
 * key over the row's authority-bearing columns (see `libs/grants/src/row-integrity.ts`), written
 * by Writ with the row and verified where the row grants (the token exchange's task read, client
 * authentication, a task's declaration): a row inserted or changed by hand, without the master
 * key, is refused. Rows written before this migration have no tag: the first instance to start
 * with it tags them once (trust on first use at the upgrade) and records that in
 * `row_integrity_backfill` (one row) and the audit log; from then on an untagged row is refused
 * like a bad one. `writ_service` already has its grants on the three tables (table grants cover
 * new columns); it reads and inserts the marker.
 * Admin tokens are tagged over their id, role, hash and expiry: a token row inserted by hand (the
 * hash of a token of the DBA's own) or given a higher role authenticates nothing.
 *
 * Outside a transaction, each statement committed on its own and re-runnable: in one transaction,
 * the ACCESS EXCLUSIVE lock of the first `ALTER TABLE` (on `tasks`) was held while the next ones
 * waited for theirs (behind any long transaction on `agents`, say), and no task could be read or
 * written meanwhile. Each lock is now held for its catalog change alone.
 */
export class RowIntegrity1764590000000 implements MigrationInterface {
  name = 'RowIntegrity1764590000000';
  transaction = false;

  async up(q: QueryRunner): Promise<void> {
    for (const table of TAGGED) await q.query(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS integrity_tag text`);
    await q.query(`
      CREATE TABLE IF NOT EXISTS row_integrity_backfill (
        id smallint PRIMARY KEY CHECK (id = 1),
        tagged_at timestamptz NOT NULL DEFAULT now()
      )`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT ON row_integrity_backfill TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE IF EXISTS row_integrity_backfill');
    for (const table of TAGGED) await q.query(`ALTER TABLE ${table} DROP COLUMN IF EXISTS integrity_tag`);
  }
}
