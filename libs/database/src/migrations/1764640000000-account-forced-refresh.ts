import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `connected_accounts.forced_refreshed_at`: when a refresh of the account was last claimed
 * because the upstream refused its access token (a `401`) before its expiry, whatever that
 * refresh's outcome. Such a refresh is claimed (in the lease's conditional UPDATE) only when the
 * last one is at least
 * `MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS` old, so an upstream refusing every token cannot make
 * each call a refresh and a refresh-token rotation written. A reconnect clears it.
 */
export class AccountForcedRefresh1764640000000 implements MigrationInterface {
  name = 'AccountForcedRefresh1764640000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE connected_accounts ADD COLUMN forced_refreshed_at timestamptz');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE connected_accounts DROP COLUMN forced_refreshed_at');
  }
}
