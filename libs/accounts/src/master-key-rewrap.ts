import { Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import { rewrapConnectorCredentials } from '@writ/connectors';
import type { RewrapCount } from '@writ/keys';
import { RUNTIME, type Runtime } from '@writ/platform';
import { ConnectedAccounts } from './connected-accounts';

/** Key of the advisory lock under which one instance at a time re-seals under a new master key. */
const REWRAP_LOCK = 7_311_046;

/** What one {@link rewrapUnderCurrentMasterKey} did, per table (`busy`: another instance holds the lock; `none`: no previous key configured). */
export type MasterKeyRewrapReport = { tables: Record<string, RewrapCount> } | 'busy' | 'none';

/**
 * After a master key rotation (`WRIT_MASTER_KEY_PREVIOUS` set), re-seals under the current key
 * every value still sealed under a previous one, each table by its owner: signing keys, connector
 * credentials (with their fingerprints), connect links and connected accounts. One instance at a
 * time (a session advisory lock, tried: an instance starting meanwhile leaves the work to the one
 * doing it); every row is one conditional UPDATE that applies only while the row still holds the
 * value read, so a concurrent change is never lost. Records one `master_key.rewrapped` event with
 * the counts per table when anything was re-sealed or left for a later start (values never).
 */
export async function rewrapUnderCurrentMasterKey(runtime: Runtime, accounts: ConnectedAccounts): Promise<MasterKeyRewrapReport> {
  const { pool, masterKey, signingKeys, audit } = runtime;
  if (masterKey.previousCount === 0) return 'none';
  const lock = await pool.connect();
  try {
    const { rows } = await lock.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [REWRAP_LOCK]);
    if (!rows[0].locked) return 'busy';
    try {
      const tables: Record<string, RewrapCount> = {
        signing_keys: await signingKeys.rewrapPrivateKeys(),
        connectors: await rewrapConnectorCredentials(pool, masterKey),
        ...(await accounts.rewrapSealed()),
      };
      // Also when only rows left for later were found (changed meanwhile, or under a refresh):
      // "a restart records no new event" is how the operator knows none is left under a previous key.
      const touched = Object.values(tables).reduce((sum, count) => sum + count.rewrapped + count.skipped, 0);
      if (touched > 0) {
        await audit.record({
          type: 'master_key.rewrapped',
          outcome: 'success',
          actor: { type: 'system', id: 'master-key-rewrap' },
          data: {
            previous_keys: masterKey.previousCount,
            tables: Object.fromEntries(
              Object.entries(tables).map(([table, count]) => [table, { rewrapped: count.rewrapped, skipped: count.skipped, unopened: count.unopened.length }]),
            ),
          },
        });
      }
      return { tables };
    } finally {
      await lock.query('SELECT pg_advisory_unlock($1)', [REWRAP_LOCK]);
    }
  } finally {
    lock.release();
  }
}

/** One re-wrap per runtime, however many apps (the launcher runs three) start over it. */
const runs = new WeakMap<Runtime, Promise<MasterKeyRewrapReport>>();

/**
 * Runs {@link rewrapUnderCurrentMasterKey} once the app starts (every service, so whichever
 * starts first after a rotation does it) and logs what it did. Not fatal: values sealed under a
 * previous key still open while it is configured, and the next start retries.
 */
@Injectable()
export class MasterKeyRewrap implements OnApplicationBootstrap {
  constructor(
    @Inject(RUNTIME) private readonly runtime: Runtime,
    private readonly accounts: ConnectedAccounts,
  ) {}

  /** See {@link MasterKeyRewrap}. */
  async onApplicationBootstrap(): Promise<void> {
    let run = runs.get(this.runtime);
    if (run) return void (await run.catch(() => undefined));
    runs.set(this.runtime, (run = rewrapUnderCurrentMasterKey(this.runtime, this.accounts)));
    const { logger } = this.runtime;
    let report: MasterKeyRewrapReport;
    try {
      report = await run;
    } catch (error) {
      logger.error(
        { err: error instanceof Error ? error.message : String(error) },
        'values sealed under a previous master key were not all re-sealed (they still open while WRIT_MASTER_KEY_PREVIOUS has their key); the next start retries',
      );
      return;
    }
    if (report === 'busy') logger.info('another instance is re-sealing values under the current master key');
    if (typeof report !== 'object') return;
    const counts = Object.fromEntries(Object.entries(report.tables).map(([table, count]) => [table, count.rewrapped]));
    logger.info({ rewrapped: counts }, 'values sealed under a previous master key re-sealed under WRIT_MASTER_KEY');
    for (const [table, count] of Object.entries(report.tables)) {
      if (count.unopened.length) {
        logger.warn(
          { table, rows: count.unopened },
          'sealed values that open under no configured master key (WRIT_MASTER_KEY, WRIT_MASTER_KEY_PREVIOUS) were left as they are: set them again',
        );
      }
      if (count.skipped) logger.info({ table, rows: count.skipped }, 'sealed values changed meanwhile or under a refresh were left for the next start');
    }
  }
}
