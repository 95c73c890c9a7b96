import { Inject, Injectable, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { rewrapConnectorCredentials } from '@writ/connectors';
import { retagUnderCurrentMasterKey, type RowTagCounts, takeRetagCounts, type TaggedTable } from '@writ/grants';
import { type RewrapControl, type RewrapCount, RewrapStopped, UNCONTROLLED } from '@writ/keys';
import { RUNTIME, type Runtime } from '@writ/platform';
import { ConnectedAccounts } from './connected-accounts';

/** Key of the advisory lock under which one instance at a time re-seals under a new master key. */
const REWRAP_LOCK = 7_311_046;

/**
 * What one {@link rewrapUnderCurrentMasterKey} did, per table, and the row integrity tags made
 * again under the current key (`busy`: another instance holds the lock; `none`: no previous key
 * configured; `stopped`: by the shutdown, part done).
 */
export type MasterKeyRewrapReport = { tables: Record<string, RewrapCount>; retagged: RowTagCounts } | 'busy' | 'none' | 'stopped';

/**
 * After a master key rotation (`WRIT_MASTER_KEY_PREVIOUS` set), re-seals under the current key
 * every value still sealed under a previous one, each table by its owner: signing keys, connector
 * credentials (with their fingerprints), connect links and connected accounts. One instance at a
 * time (a session advisory lock, tried: an instance starting meanwhile leaves the work to the one
 * doing it); every row is one conditional UPDATE that applies only while the row still holds the
 * value read, so a concurrent change is never lost. Then tags again under the current key the
 * rows whose integrity tag verifies under a previous one (so that the previous key can be
 * dropped), in committed batches, each row only while it still holds the tag read
 * (`retagUnderCurrentMasterKey`; `retagProgress` hears its counts). Records one
 * `master_key.rewrapped` event with the counts per table when anything was re-sealed, re-tagged
 * or left for a later start (values never); its re-tag counts are taken, in the event's own
 * transaction, from `master_key_retag_progress`: the rows re-tagged since the last event, a run
 * that died half-way included, each counted once.
 */
export async function rewrapUnderCurrentMasterKey(
  runtime: Runtime,
  accounts: ConnectedAccounts,
  control: (table: string) => RewrapControl = () => UNCONTROLLED,
  retagProgress: (table: TaggedTable, retagged: number) => void = () => undefined,
): Promise<MasterKeyRewrapReport> {
  const { pool, masterKey, signingKeys, audit, rowIntegrity } = runtime;
  if (masterKey.previousCount === 0) return 'none';
  const lock = await pool.connect();
  // A connection whose unlock failed may still hold the lock: it is closed, not pooled.
  let unlockFailed: Error | undefined;
  try {
    const { rows } = await lock.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [REWRAP_LOCK]);
    if (!rows[0].locked) return 'busy';
    try {
      const tables: Record<string, RewrapCount> = {};
      const steps: [string, (control: RewrapControl) => Promise<RewrapCount>][] = [
        ['signing_keys', (each) => signingKeys.rewrapPrivateKeys(each)],
        ['connectors', (each) => rewrapConnectorCredentials(pool, masterKey, each)],
        ['connect_links', (each) => accounts.rewrapConnectLinks(each)],
        ['connected_accounts', (each) => accounts.rewrapConnectedAccounts(each)],
      ];
      let stopped = false;
      for (const [table, rewrap] of steps) {
        try {
          tables[table] = await rewrap(control(table));
        } catch (error) {
          if (!(error instanceof RewrapStopped)) throw error;
          tables[table] = error.count;
          stopped = true;
          break;
        }
      }
      if (!stopped) {
        const retagControl = control('row_integrity');
        const retag = await retagUnderCurrentMasterKey(pool, rowIntegrity, { stopped: () => retagControl.stopped(), progress: retagProgress });
        stopped = retag === 'stopped';
      }
      const { result: retagged } = await audit.recordWith<RowTagCounts>(takeRetagCounts, (retagged) => {
        // Also when only rows left for later were found (changed meanwhile, or under a refresh):
        // "a restart records no new event" is how the operator knows none is left under a previous key.
        const touched =
          Object.values(tables).reduce((sum, count) => sum + count.rewrapped + count.skipped, 0) +
          Object.values(retagged).reduce((sum, count) => sum + count, 0);
        if (touched === 0 && !stopped) return [];
        return [
          {
            type: 'master_key.rewrapped',
            outcome: 'success',
            actor: { type: 'system', id: 'master-key-rewrap' },
            data: {
              previous_keys: masterKey.previousCount,
              tables: Object.fromEntries(
                Object.entries(tables).map(([table, count]) => [
                  table,
                  { rewrapped: count.rewrapped, skipped: count.skipped, unopened: count.unopened.length },
                ]),
              ),
              retagged,
              ...(stopped ? { stopped: true } : {}),
            },
          },
        ];
      });
      return stopped ? 'stopped' : { tables, retagged };
    } finally {
      await lock.query('SELECT pg_advisory_unlock($1)', [REWRAP_LOCK]).catch((error: unknown) => {
        unlockFailed = error instanceof Error ? error : new Error(String(error));
      });
    }
  } finally {
    lock.release(unlockFailed);
  }
}

/** The re-wrap of a runtime (one, however many apps, the launcher runs three, start over it) and how to stop it. */
interface RewrapRun {
  done: Promise<MasterKeyRewrapReport | undefined>;
  stop: () => void;
}
const runs = new WeakMap<Runtime, RewrapRun>();

/**
 * The re-wrap started over `runtime` by {@link MasterKeyRewrap}, once it ended (`undefined`: it
 * failed, and said why in the log; none started: `none`).
 */
export function masterKeyRewrapDone(runtime: Runtime): Promise<MasterKeyRewrapReport | undefined> {
  return runs.get(runtime)?.done ?? Promise.resolve('none');
}

/**
 * Runs {@link rewrapUnderCurrentMasterKey} in the background once the app starts (every
 * service, so whichever starts first after a rotation does it): the service serves meanwhile
 * (values sealed under a previous key open while it is configured), however many rows there
 * are; progress is logged after each batch. Not fatal: the next start retries. A shutdown stops
 * it between two rows and waits for that (what was done stays done, the next start goes on).
 */
@Injectable()
export class MasterKeyRewrap implements OnApplicationBootstrap, OnModuleDestroy {
  constructor(
    @Inject(RUNTIME) private readonly runtime: Runtime,
    private readonly accounts: ConnectedAccounts,
  ) {}

  /** See {@link MasterKeyRewrap}. */
  onApplicationBootstrap(): void {
    if (runs.has(this.runtime)) return;
    let stopping = false;
    const { logger, config, masterKey, metrics } = this.runtime;
    if (config.masterKeyPrevious.length > masterKey.previousCount) {
      // Said once per start, never which key: the operator meant another one (the old key), or repeated one.
      logger.warn(
        { given: config.masterKeyPrevious.length, distinct_previous: masterKey.previousCount },
        'WRIT_MASTER_KEY_PREVIOUS repeats WRIT_MASTER_KEY or one of its own keys: a repeated key is ignored (no re-seal comes from it)',
      );
    }
    const control = (table: string): RewrapControl => ({
      stopped: () => stopping,
      progress: (count) => {
        metrics.masterKeyRewrapProgress(table, { rewrapped: count.rewrapped, skipped: count.skipped, unopened: count.unopened.length });
        logger.info(
          { table, rewrapped: count.rewrapped, skipped: count.skipped, unopened: count.unopened.length },
          're-sealing values sealed under a previous master key under WRIT_MASTER_KEY',
        );
      },
    });
    const retagProgress = (table: TaggedTable, retagged: number) => {
      metrics.masterKeyRetagProgress(table, retagged);
      logger.info({ table, retagged }, 're-tagging rows tagged under a previous master key under WRIT_MASTER_KEY');
    };
    const done = rewrapUnderCurrentMasterKey(this.runtime, this.accounts, control, retagProgress).then(
      (report) => {
        this.report(report);
        return report;
      },
      (error: unknown) => {
        logger.error(
          { err: error instanceof Error ? error.message : String(error) },
          'values sealed under a previous master key were not all re-sealed (they still open while WRIT_MASTER_KEY_PREVIOUS has their key); the next start retries',
        );
        return undefined;
      },
    );
    runs.set(this.runtime, { done, stop: () => (stopping = true) });
  }

  /** Stops the re-wrap between two rows and waits for it: the pool and the audit writer close after the apps. */
  async onModuleDestroy(): Promise<void> {
    const run = runs.get(this.runtime);
    if (!run) return;
    run.stop();
    await run.done;
  }

  private report(report: MasterKeyRewrapReport): void {
    const { logger } = this.runtime;
    if (report === 'busy') logger.info('another instance is re-sealing values under the current master key');
    if (report === 'stopped') logger.info('the re-seal of values under the current master key was stopped by the shutdown; the next start goes on');
    if (typeof report !== 'object') return;
    const counts = Object.fromEntries(Object.entries(report.tables).map(([table, count]) => [table, count.rewrapped]));
    logger.info(
      { rewrapped: counts, retagged: report.retagged },
      'values sealed and rows tagged under a previous master key re-sealed and re-tagged under WRIT_MASTER_KEY',
    );
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
