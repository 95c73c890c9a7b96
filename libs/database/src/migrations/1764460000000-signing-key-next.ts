import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Signing keys get a `next` status (one at most): the key that becomes active at the next
 * rotation, published in the JWKS beforehand so that verifiers caching the JWKS already know it.
 * `retiring_since` records when a key stopped signing, which is when the tokens it signed
 * start to run out (its successor may have been created long before, as `next`).
 * No new table: the services' existing privileges on `signing_keys` cover it.
 */
export class SigningKeyNext1764460000000 implements MigrationInterface {
  name = 'SigningKeyNext1764460000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE signing_keys DROP CONSTRAINT IF EXISTS signing_keys_status_check`);
    await q.query(`ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_status_check CHECK (status IN ('next', 'active', 'retiring', 'retired'))`);
    await q.query(`CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (status) WHERE status = 'next'`);
    await q.query(`ALTER TABLE signing_keys ADD COLUMN retiring_since timestamptz`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DELETE FROM signing_keys WHERE status = 'next'`);
    await q.query(`ALTER TABLE signing_keys DROP COLUMN retiring_since`);
    await q.query(`DROP INDEX signing_keys_one_next`);
    await q.query(`ALTER TABLE signing_keys DROP CONSTRAINT signing_keys_status_check`);
    await q.query(`ALTER TABLE signing_keys ADD CONSTRAINT signing_keys_status_check CHECK (status IN ('active', 'retiring', 'retired'))`);
  }
}
