import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `integrity_tag` on `connectors`: an HMAC under a subkey of the master key over the connector's
 * id, kind, base URL, catalogue (`operations`, canonical JSON) and credential type (see
 * `libs/grants/src/row-integrity.ts`), written by Writ with the row and verified where the row
 * grants (the gateway's read of a call's connector, the token exchange's catalogue read): a
 * catalogue changed by hand, without the master key (a read action's path pointed at a write
 * endpoint), is refused as if the connector did not exist. Not the sealed credential, its
 * fingerprint, `version` or timestamps: the sealed credential is bound to the id and base URL by
 * its AES-GCM associated data, and is re-sealed without the catalogue changing.
 *
 * Connectors written before this migration have no tag: the upgrade's backfill tags them once
 * (trust on first use). An installation that already ran the backfill of `row_integrity` has its
 * marker: `connectors_tagged` (false on that row) tells the next start to tag the connectors,
 * and only them, once. `writ_service` already has its grants on `connectors` (table grants cover
 * new columns); it is given `UPDATE` on the marker to set `connectors_tagged`.
 *
 * Outside a transaction, each statement committed on its own and re-runnable: in one transaction,
 * the ACCESS EXCLUSIVE lock on `connectors` (read by every token exchange and gateway call that
 * misses its cache) was held while the marker's `ALTER TABLE` waited for its own lock.
 */
export class ConnectorIntegrity1764600000000 implements MigrationInterface {
  name = 'ConnectorIntegrity1764600000000';
  transaction = false;

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE connectors ADD COLUMN IF NOT EXISTS integrity_tag text');
    await q.query('ALTER TABLE row_integrity_backfill ADD COLUMN IF NOT EXISTS connectors_tagged boolean NOT NULL DEFAULT false');
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT UPDATE ON row_integrity_backfill TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE row_integrity_backfill DROP COLUMN IF EXISTS connectors_tagged');
    await q.query('ALTER TABLE connectors DROP COLUMN IF EXISTS integrity_tag');
  }
}
