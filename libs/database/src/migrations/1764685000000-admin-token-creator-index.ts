import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `admin_tokens_created_by (created_by)`: revoking an admin token revokes every token descended
 * from it through `created_by` (its children, theirs...), walked by a recursive query in the
 * revoking transaction; each step of the walk looks up the tokens one token created, an index
 * scan rather than a read of every token. `admin_tokens` is small (one row per token an admin
 * made) and not among the hot tables: a plain build, its SHARE lock held for milliseconds (a token
 * creation waits that long; authentication only reads).
 */
export class AdminTokenCreatorIndex1764685000000 implements MigrationInterface {
  name = 'AdminTokenCreatorIndex1764685000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('CREATE INDEX IF NOT EXISTS admin_tokens_created_by ON admin_tokens (created_by)');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP INDEX IF EXISTS admin_tokens_created_by');
  }
}
