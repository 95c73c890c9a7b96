import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * The refresh lease of a connected account: `refresh_lease_holder` (a random id per refresh
 * attempt) and `refresh_lease_expires_at`. A refresh claims the lease with one conditional
 * UPDATE (free, or expired: its holder is presumed dead), calls the provider with no
 * transaction open, and stores the new tokens only while it still holds the lease; so no row
 * lock is held across the HTTP call, and one refresh at a time runs per account across
 * instances (refresh tokens are often one-use). `writ_service` already has SELECT, INSERT,
 * UPDATE, DELETE on `connected_accounts` (table grants cover new columns); granted again here so
 * that this migration stands on its own.
 */
export class AccountRefreshLease1764560000000 implements MigrationInterface {
  name = 'AccountRefreshLease1764560000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE connected_accounts ADD COLUMN refresh_lease_holder uuid, ADD COLUMN refresh_lease_expires_at timestamptz');
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE, DELETE ON connected_accounts TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE connected_accounts DROP COLUMN refresh_lease_holder, DROP COLUMN refresh_lease_expires_at');
  }
}
