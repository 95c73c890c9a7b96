import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The backoff of a connected account's refresh after transient failures (its provider's token
 * endpoint unreachable, timing out, or answering `5xx`/`429`): `refresh_failures`, how many
 * attempts in a row failed that way, and `refresh_retry_at`, before which no refresh of the
 * account is claimed (checked in the lease's conditional UPDATE, by PostgreSQL's clock). Both are
 * written by the attempt's release, cleared by a successful refresh or a reconnect.
 *
 * Outside a transaction: one `ALTER TABLE` of an existing table, re-runnable (`IF NOT EXISTS`).
 * Its ACCESS EXCLUSIVE lock lasts a catalog change (a constant default rewrites nothing).
 */
export class AccountRefreshBackoff1764660000000 implements MigrationInterface {
  name = 'AccountRefreshBackoff1764660000000';
  transaction = false;

  async up(q: QueryRunner): Promise<void> {
    await q.query(
      'ALTER TABLE connected_accounts ADD COLUMN IF NOT EXISTS refresh_failures integer NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS refresh_retry_at timestamptz',
    );
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE connected_accounts DROP COLUMN IF EXISTS refresh_retry_at, DROP COLUMN IF EXISTS refresh_failures');
  }
}
