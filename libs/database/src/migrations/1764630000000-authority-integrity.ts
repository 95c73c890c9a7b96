import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `integrity_tag` on `identity_providers`, `policies` and `approvals`: an HMAC under a subkey of
 * the master key (see `libs/grants/src/row-integrity.ts`), written by Writ with the row and
 * verified where the row grants, so that a database administrator without the master key cannot:
 *
 * - register or edit a trusted identity provider (an issuer whose keys they hold) and have Writ
 *   accept user tokens they forge: covered are the issuer, JWKS URI, audience and asserting
 *   orchestrators; verified when the verifier of user tokens reads the provider (its cache fill);
 * - activate a policy of their own (one that asks for no approval): covered are the version, the
 *   bundle (its SHA-256), the data override and `loaded_at` of the active row, tagged at each
 *   activation and cleared at deactivation; verified where an instance installs the active policy;
 * - turn a pending approval into an approved one: covered are what was asked and the decision,
 *   tagged when Writ decides; verified where the approval is consumed.
 *
 * Rows written before this migration have no tag: the upgrade's backfill tags them once (trust on
 * first use): every identity provider, the active policy, every decided approval still
 * `approved` or `denied`. `providers_policies_approvals_tagged` on its marker (false on an
 * existing row) tells the next start to do it once. `writ_service` already has its grants on
 * the three tables (table grants cover new columns) and `UPDATE` on the marker.
 *
 * Outside a transaction, one committed statement each (docs/migrations.md): each `ALTER` holds
 * its table's ACCESS EXCLUSIVE lock only for itself, not until the last table's is granted. A
 * run interrupted half-way is run again whole (`IF NOT EXISTS`).
 */
export class AuthorityIntegrity1764630000000 implements MigrationInterface {
  name = 'AuthorityIntegrity1764630000000';
  transaction = false;

  async up(q: QueryRunner): Promise<void> {
    for (const table of ['identity_providers', 'policies', 'approvals']) await q.query(`ALTER TABLE ${table} ADD COLUMN IF NOT EXISTS integrity_tag text`);
    await q.query('ALTER TABLE row_integrity_backfill ADD COLUMN IF NOT EXISTS providers_policies_approvals_tagged boolean NOT NULL DEFAULT false');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE row_integrity_backfill DROP COLUMN IF EXISTS providers_policies_approvals_tagged');
    for (const table of ['identity_providers', 'policies', 'approvals']) await q.query(`ALTER TABLE ${table} DROP COLUMN IF EXISTS integrity_tag`);
  }
}
