import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `admin_tokens.expires_at`: an admin token may be made to expire (`expires_in` at creation, as
 * Vault's token TTLs and Keycloak's admin sessions do); NULL is a token that lives until it is
 * revoked, as every token made before. `writ_service` already has its grants on `admin_tokens`
 * (table grants cover new columns).
 */
export class AdminTokenExpiry1764570000000 implements MigrationInterface {
  name = 'AdminTokenExpiry1764570000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE admin_tokens ADD COLUMN expires_at timestamptz');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE admin_tokens DROP COLUMN expires_at');
  }
}
