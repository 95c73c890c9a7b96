import { Inject, Injectable, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import type { PoolClient } from 'pg';
import type { Logger } from 'pino';
import { POLICY_CHANGED_CHANNEL } from '@writ/database';
import { POLICY_INTEGRITY_COLUMNS, policyIntegrityFieldsOf, type PolicyIntegrityRow, type RowIntegrity } from '@writ/grants';
import { ActivePolicy, PolicyEngine } from '@writ/policy';
import { ConflictError } from './http-exception.filter';
import { LOGGER, RUNTIME } from './runtime.module';
import type { Runtime } from './runtime';

/** A policy stored in PostgreSQL for every instance, as `GET /v1/policies` shows it. */
export interface StoredPolicyInfo {
  version: string;
  source: string;
  loaded_by: string;
  loaded_at: string;
}

/**
 * How often each instance looks for a newly activated policy, besides the notification every
 * activation sends (`writ_policy_changed`), which installs it at once: the fallback for a
 * notification lost with the listening connection.
 */
export const POLICY_SYNC_INTERVAL_MS = 2_000;

/**
 * Loads a stored bundle (bytes of an `opa build` bundle or a `.wasm`) with its optional data
 * override. Throws `PolicyLoadError` when it does not load or lacks the entrypoint.
 */
export async function loadPolicyEngine(bundle: Uint8Array, data: Record<string, unknown> | null): Promise<PolicyEngine> {
  const engine = await PolicyEngine.load(bundle);
  return data ? engine.withData(data) : engine;
}

/**
 * Key of the transaction advisory lock every change of the active stored policy takes
 * ({@link activateStoredPolicy}, {@link deactivateStoredPolicy}), so that changes made at the
 * same time, on any instance, apply one after the other, each seeing the one before.
 */
const POLICY_CHANGE_LOCK = 7_311_045;

/**
 * Takes {@link POLICY_CHANGE_LOCK} until the caller's transaction ends, then reads the version
 * active now (null: none, every instance runs its `WRIT_POLICY` file). Read after the lock, in
 * a statement of its own, so that it sees every change committed before.
 */
async function lockActiveStoredPolicy(client: PoolClient): Promise<string | null> {
  await client.query('SELECT pg_advisory_xact_lock($1)', [POLICY_CHANGE_LOCK]);
  const { rows } = await client.query<{ version: string }>(`SELECT version FROM policies WHERE active`);
  return rows[0]?.version ?? null;
}

/** A stored policy made active, and the version it replaced (null: none was, the file was in force). */
export interface StoredPolicyActivation {
  info: StoredPolicyInfo;
  previousVersion: string | null;
}

/**
 * Makes a loaded policy the active one of the cluster (inside the caller's transaction, so
 * the change commits with its audit event). Every instance installs it when the change is
 * notified, and compares in the statement issuing a connector credential the policy version it
 * evaluated with the active one (see `credential-ledger`).
 *
 * `basedOn`, for a change built on the policy that was active (new data over its module): the
 * version active when it was read (null: none). Throws {@link ConflictError}, changing nothing,
 * when another change has been committed since, so that it is never undone by this one.
 *
 * The activated row is tagged (see `row-integrity`: its version, bundle, data and `loaded_at`) and
 * the one it replaces loses its tag: instances install only a tagged active row, so a policy a
 * database administrator inserted or made active by hand is never loaded. A version stored before
 * has its bundle and data written again with what was loaded here, never kept as stored.
 */
export async function activateStoredPolicy(
  client: PoolClient,
  integrity: RowIntegrity,
  engine: PolicyEngine,
  bundle: Uint8Array,
  data: Record<string, unknown> | null,
  source: string,
  loadedBy: string,
  basedOn?: string | null,
): Promise<StoredPolicyActivation> {
  const previousVersion = await lockActiveStoredPolicy(client);
  if (basedOn !== undefined && basedOn !== previousVersion) {
    throw new ConflictError(
      `the active policy changed while this update was prepared (it was built on ${basedOn ?? 'the policy file'}, ${previousVersion ?? 'the policy file'} is active now): nothing changed, send it again`,
    );
  }
  await client.query(`UPDATE policies SET active = false, integrity_tag = NULL WHERE active`);
  const stored = Buffer.from(bundle);
  const { rows } = await client.query<{ version: string; data: Record<string, unknown> | null; source: string; loaded_by: string; loaded_at: Date }>(
    `INSERT INTO policies (version, bundle, data, source, loaded_by, loaded_at, active)
     VALUES ($1, $2, $3, $4, $5, now(), true)
     ON CONFLICT (version) DO UPDATE SET active = true, bundle = EXCLUDED.bundle, data = EXCLUDED.data, source = EXCLUDED.source,
       loaded_by = EXCLUDED.loaded_by, loaded_at = now()
     RETURNING version, data, source, loaded_by, loaded_at`,
    [engine.version, stored, data === null ? null : JSON.stringify(data), source, loadedBy],
  );
  // Tagged over the data as stored (jsonb, read back) and the bundle as written.
  const tag = integrity.tagPolicy({ version: rows[0].version, bundle: stored, data: rows[0].data, loadedAt: rows[0].loaded_at });
  await client.query('UPDATE policies SET integrity_tag = $2 WHERE version = $1', [rows[0].version, tag]);
  return {
    info: { version: rows[0].version, source: rows[0].source, loaded_by: rows[0].loaded_by, loaded_at: rows[0].loaded_at.toISOString() },
    previousVersion,
  };
}

/**
 * Deactivates the stored policy: every instance goes back to its `WRIT_POLICY` file. Returns
 * the version deactivated, or null when none was active (nothing changed).
 */
export async function deactivateStoredPolicy(client: PoolClient): Promise<string | null> {
  const previousVersion = await lockActiveStoredPolicy(client);
  if (previousVersion === null) return null;
  await client.query(`UPDATE policies SET active = false, integrity_tag = NULL WHERE active`);
  return previousVersion;
}

/**
 * Why an instance refused the cluster's active stored policy: its integrity tag does not verify
 * (activated or changed outside Writ), or it does not load (bundle, data or entrypoint).
 */
export type StoredPolicyRefusal = 'integrity' | 'load';

/**
 * Keeps this instance's policy equal to the cluster's: when a policy is active in
 * PostgreSQL it wins over the local file; when none is, the file is in force. A stored
 * policy that fails to load here, or whose integrity tag does not verify (activated or changed by
 * hand, without the master key), is logged and the last known good one stays: the credential
 * ledger then issues nothing (the policy that decided is not the active one), so token
 * exchanges answer `503` with `Retry-After` until a policy Writ activated is in force.
 */
@Injectable()
export class PolicySync implements OnApplicationBootstrap, OnApplicationShutdown {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private failedVersion: string | undefined;
  /** The tag of {@link failedVersion}'s row when it was refused: the same version activated again by Writ is tried again. */
  private failedTag: string | null | undefined;
  /** Why {@link failedVersion} was refused. */
  private failedBecause: StoredPolicyRefusal = 'load';
  private unsubscribe: (() => void) | undefined;

  constructor(
    @Inject(RUNTIME) private readonly runtime: Runtime,
    private readonly policy: ActivePolicy,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  /** First sync before serving, then on every notified change and every {@link POLICY_SYNC_INTERVAL_MS}. */
  async onApplicationBootstrap(): Promise<void> {
    const again = () => void this.syncAgain();
    this.unsubscribe = this.runtime.changes.subscribe(POLICY_CHANGED_CHANNEL, { changed: again, reset: again });
    await this.sync();
    this.timer = setInterval(() => void this.sync(), POLICY_SYNC_INTERVAL_MS);
    this.timer.unref();
  }

  /**
   * The version of the cluster's active stored policy when it does not load here (this instance
   * keeps its last good policy and answers token exchanges `503` meanwhile); `undefined` when the
   * policy in force is the one to be. Readiness fails on it.
   */
  failing(): string | undefined {
    return this.failedVersion !== undefined && this.policy.current().version !== this.failedVersion ? this.failedVersion : undefined;
  }

  /** Why the policy {@link failing} names was refused (`undefined` when none is). */
  failingBecause(): StoredPolicyRefusal | undefined {
    return this.failing() === undefined ? undefined : this.failedBecause;
  }

  /** Stops polling. */
  onApplicationShutdown(): void {
    if (this.timer) clearInterval(this.timer);
    this.unsubscribe?.();
  }

  /** One look at the cluster's active policy; installs it if it differs. Never throws. */
  sync(): Promise<void> {
    this.running ??= this.syncOnce().finally(() => (this.running = undefined));
    return this.running;
  }

  /**
   * A sync that starts after the one in flight, if any (which may have read the policies before
   * the change it is called for committed). Never throws.
   */
  async syncAgain(): Promise<void> {
    await this.running;
    await this.sync();
  }

  private async syncOnce(): Promise<void> {
    try {
      const { rows } = await this.runtime.pool.query<{ version: string; loaded_by: string; integrity_tag: string | null }>(
        `SELECT version, loaded_by, integrity_tag FROM policies WHERE active`,
      );
      const active = rows[0] as { version: string; loaded_by: string; integrity_tag: string | null } | undefined;
      if (!active) {
        this.failedVersion = undefined;
        if (this.policy.installedFromElsewhere) {
          await this.policy.reload();
          this.logger.info({ version: this.policy.current().version }, 'stored policy deactivated: back to the policy file');
        }
        return;
      }
      if (this.policy.current().version === active.version) return;
      if (this.failedVersion === active.version && this.failedTag === active.integrity_tag) return;
      const row = await this.runtime.pool.query<PolicyIntegrityRow>(`SELECT ${POLICY_INTEGRITY_COLUMNS} FROM policies WHERE version = $1 AND active`, [
        active.version,
      ]);
      const stored = row.rows[0];
      if (!stored) return;
      // Verified once per version installed (not per request): the row is what Writ activated.
      if (!this.runtime.rowIntegrity.verifyPolicy(policyIntegrityFieldsOf(stored), stored.integrity_tag)) {
        [this.failedVersion, this.failedTag, this.failedBecause] = [active.version, stored.integrity_tag, 'integrity'];
        this.logger.error(
          { table: 'policies', id: active.version, kept: this.policy.current().version },
          'stored policy refused (its integrity tag does not verify): keeping the last good policy',
        );
        return;
      }
      try {
        const engine = await loadPolicyEngine(stored.bundle, stored.data);
        const previous = this.policy.current().version;
        this.policy.install(engine, active.loaded_by, 'database');
        this.failedVersion = undefined;
        this.logger.info({ version: engine.version, previous }, 'policy installed from the database');
      } catch (error) {
        [this.failedVersion, this.failedTag, this.failedBecause] = [active.version, stored.integrity_tag, 'load'];
        this.logger.error(
          { version: active.version, error: error instanceof Error ? error.message : String(error), kept: this.policy.current().version },
          'stored policy refused: keeping the last good policy',
        );
      }
    } catch (error) {
      this.logger.warn({ error: error instanceof Error ? error.message : String(error) }, 'policy sync failed (database unavailable?)');
    }
  }
}
