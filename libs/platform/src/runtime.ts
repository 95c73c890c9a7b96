import { randomBytes, randomUUID, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Pool } from 'pg';
import type { DataSource } from 'typeorm';
import { AuditCheckpointer, AuditService } from '@writ/audit';
import { loadConfig, WritConfig } from '@writ/config';
import {
  ChangeListener,
  createDataSource,
  createPool,
  EmbeddedDatabase,
  ensurePrivateDirectory,
  ensureServiceLogin,
  migrate,
  MigrationOutcome,
  NewerSchemaError,
  readPrivateFile,
  ServiceLogin,
  SIGNING_KEYS_CHANGED_CHANNEL,
  startEmbeddedPostgres,
} from '@writ/database';
import { backfillRowIntegrity, CredentialRevoker, RowIntegrity } from '@writ/grants';
import { CheckpointSigningKey, MasterKey, resolveMasterKey, SigningKeyStore } from '@writ/keys';
import { createLogger } from './logger';
import { WritMetrics } from './metrics';
import { currentRequestContext } from './request-context';
import { retroactiveSpan, startTracing, traceQueries } from './tracing';

/** Everything a Writ service needs, created once per process before Nest starts. */
export interface Runtime {
  readonly config: WritConfig;
  readonly logger: Logger;
  readonly dataSource: DataSource;
  readonly pool: Pool;
  readonly masterKey: MasterKey;
  /**
   * Tags and verifies the rows that grant authority (tasks, agents, orchestrators) under the
   * master key; a row that does not verify is logged at error level (table and id).
   */
  readonly rowIntegrity: RowIntegrity;
  readonly signingKeys: SigningKeyStore;
  readonly audit: AuditService;
  /** Signs checkpoints of the audit chain head (absent when the runtime was asked for none). */
  readonly checkpointer: AuditCheckpointer | undefined;
  readonly revoker: CredentialRevoker;
  /**
   * The process's one LISTEN connection: what is kept in memory (clients, connectors, keys, the
   * policy) is dropped or reloaded on every instance when a change is notified.
   */
  readonly changes: ChangeListener;
  /**
   * Why the process cannot recover by itself (liveness fails), e.g. an embedded PostgreSQL it
   * could not restart; `undefined` while healthy.
   */
  fatal?(): string | undefined;
  /** Prometheus metrics of this process (`GET /metrics` on every service). */
  readonly metrics: WritMetrics;
  /** Stops background work, the pool and (if this process started it) the embedded database. */
  close(): Promise<void>;
}

/** Options of {@link createRuntime}. */
export interface RuntimeOptions {
  /** A configuration already loaded (tests); default: read from the environment. */
  config?: WritConfig;
  /** Connections in this process's pool. */
  poolSize?: number;
  logger?: Logger;
  /** Sign audit checkpoints (default true; `npm run audit:verify` only reads). */
  checkpoints?: boolean;
  /** What this process runs, for tracing's `service.name` (`writ` for the launcher). */
  service?: string;
}

/** Thrown when a service cannot start; its message is the one line that says why. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

async function step<T>(what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof StartupError) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new StartupError(`${what}: ${reason.split('\n')[0]}`);
  }
}

/** The deadlines of a connection of its own (checkpoints, verification), as the request pool's. */
function sessionDeadlines(config: WritConfig) {
  const { statementTimeoutMs, lockTimeoutMs, idleInTransactionTimeoutMs } = config.operations;
  return {
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + 1_000,
    lock_timeout: lockTimeoutMs,
    idle_in_transaction_session_timeout: idleInTransactionTimeoutMs,
    keepAlive: true,
  };
}

/** Deadlines of the services' connections (see `WRIT_DB_*_TIMEOUT_MS`). */
export interface ServiceDataSourceBounds {
  checkoutTimeoutMs?: number;
  statementTimeoutMs?: number;
  lockTimeoutMs?: number;
  idleInTransactionTimeoutMs?: number;
}

function boundsOf(config: WritConfig): ServiceDataSourceBounds {
  const { checkoutTimeoutMs, statementTimeoutMs, lockTimeoutMs, idleInTransactionTimeoutMs } = config.operations;
  return { checkoutTimeoutMs, statementTimeoutMs, lockTimeoutMs, idleInTransactionTimeoutMs };
}

/** What a start does about a database migrated by a newer release (`WRIT_ALLOW_NEWER_SCHEMA`). */
export interface SchemaCheck {
  allowNewerSchema: boolean;
  /** `lock_timeout` of the migrations (`WRIT_MIGRATION_LOCK_TIMEOUT_MS`; default `migrate`'s). */
  migrationLockTimeoutMs?: number;
  /** Runs of the pending migrations before a start fails on lock timeouts (`WRIT_MIGRATION_ATTEMPTS`; default `migrate`'s). */
  migrationAttempts?: number;
}

/**
 * The one line of a start refused on a database migrated by a newer release: which migration,
 * and what to do about it.
 */
export function newerSchemaMessage(unknown: readonly string[]): string {
  const others = unknown.length > 1 ? ` and ${unknown.length - 1} more` : '';
  return (
    `the database was migrated by a newer Writ release: it holds migration ${unknown[0]}${others}, which this build does not know. ` +
    'Upgrade this instance to that release, or roll back by restoring the backup taken before the upgrade (docs/operations.md#upgrading). ' +
    'WRIT_ALLOW_NEWER_SCHEMA=true starts it anyway: only for an older instance during a rolling upgrade whose new migrations are backward compatible'
  );
}

/**
 * Runs {@link migrate} at start: a database migrated by a newer release is a {@link StartupError}
 * naming its newest migration, or with `allowNewerSchema` a warning naming them all.
 */
async function migrateAtStart(dataSource: DataSource, check: SchemaCheck, logger?: Logger): Promise<MigrationOutcome> {
  let outcome: MigrationOutcome;
  try {
    outcome = await migrate(dataSource, {
      allowNewerSchema: check.allowNewerSchema,
      lockTimeoutMs: check.migrationLockTimeoutMs,
      attempts: check.migrationAttempts,
      onRetry: (error, attempt, delayMs) =>
        logger?.warn(
          { err: error.message, attempt, retry_in_ms: delayMs },
          'database migration gave up waiting for a lock (a long transaction holds it) or was a deadlock victim: rolled back, trying again',
        ),
    });
  } catch (error) {
    if (error instanceof NewerSchemaError) throw new StartupError(newerSchemaMessage(error.unknown));
    throw error;
  }
  if (outcome.unknown.length > 0) {
    logger?.warn(
      { unknown_migrations: outcome.unknown },
      'WRIT_ALLOW_NEWER_SCHEMA=true: starting on a database migrated by a newer Writ release, whose migrations this build does not know',
    );
  }
  if (outcome.applied.length) logger?.info({ migrations: outcome.applied }, 'database migrated');
  return outcome;
}

/**
 * Migrates as the owner (`ownerUrl`, the embedded cluster's superuser), makes `login` a member
 * of writ_service and nothing more, then opens the services' data source and pool as that
 * login (no superuser, owner of nothing), as with an external database: the services cannot
 * disable the audit triggers nor change audit rows. A database migrated by a newer release is
 * refused as at every start (`check`). The caller ends the pool and destroys the data source.
 */
export async function connectAsServiceLogin(
  ownerUrl: string,
  login: ServiceLogin,
  serviceUrl: string,
  poolSize?: number,
  bounds: ServiceDataSourceBounds = {},
  check: SchemaCheck = { allowNewerSchema: false },
  logger?: Logger,
): Promise<{ dataSource: DataSource; pool: Pool; applied: string[] }> {
  const owner = createDataSource(ownerUrl, { poolSize: 1, applicationName: 'writ-migrate' });
  const ownerPool = createPool(ownerUrl, { poolSize: 1, applicationName: 'writ-migrate' });
  let applied: string[];
  try {
    await step('cannot reach the database', () => owner.initialize());
    ({ applied } = await step('database migration failed', () => migrateAtStart(owner, check, logger)));
    await step('cannot set up the service login', () => ensureServiceLogin(ownerPool, login));
  } finally {
    await ownerPool.end().catch(() => undefined);
    if (owner.isInitialized) await owner.destroy().catch(() => undefined);
  }
  const { dataSource, pool } = await openServiceConnections(serviceUrl, poolSize, bounds);
  return { dataSource, pool, applied };
}

/**
 * The services' two ways into PostgreSQL, with the same deadlines: TypeORM's data source (its
 * own small pool of TYPEORM_POOL_SIZE: migrations, admin reads through repositories) and the pool their SQL runs on (`poolSize`).
 */
async function openServiceConnections(
  url: string,
  poolSize: number | undefined,
  bounds: ServiceDataSourceBounds,
): Promise<{ dataSource: DataSource; pool: Pool }> {
  const dataSource = createDataSource(url, { ...bounds, poolSize: TYPEORM_POOL_SIZE });
  const pool = createPool(url, { ...bounds, poolSize });
  try {
    await step('cannot reach the database', () => dataSource.initialize());
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw error;
  }
  return { dataSource, pool };
}

/**
 * Connections of TypeORM's own pool in a service process: migrations at start, then the admin
 * reads that go through repositories (lists and reads of agents, orchestrators, admin tokens,
 * signing keys, policy history). Independent of `WRIT_DB_POOL_SIZE`, with the same deadlines;
 * connections open on demand, so a service that reads nothing through it holds one.
 */
export const TYPEORM_POOL_SIZE = 4;

/**
 * Connects to PostgreSQL (embedded unless `WRIT_DATABASE_URL`), migrates (refusing a database a
 * newer release migrated, unless `WRIT_ALLOW_NEWER_SCHEMA`), resolves the master key and loads
 * the signing keys. Any failure is a {@link StartupError}: no database, no keys, no service.
 */
export async function createRuntime(options: RuntimeOptions = {}): Promise<Runtime> {
  const config = options.config ?? (await step('configuration', async () => loadConfig()));
  const logger = options.logger ?? createLogger(config.logLevel);
  const poolSize = config.operations.poolSize ?? options.poolSize;
  for (const { name, suggestion } of config.unknownVariables) {
    // Names only: the value may be a secret set under a misspelt name.
    logger.warn(
      { variable: name, did_you_mean: suggestion },
      `${name} is set but no Writ service reads it${suggestion ? `: did you mean ${suggestion}?` : ''}`,
    );
  }
  const stopTracing = await startTracing(config, options.service ?? 'writ', logger);
  let embedded: EmbeddedDatabase | undefined;
  const url = await step('cannot start the embedded PostgreSQL', async () => {
    if (config.databaseUrl) return config.databaseUrl;
    embedded = await startEmbeddedPostgres({
      dataDir: config.dataDir,
      onLog: (line) => logger.debug({ postgres: line }),
      onEvent: (message) => logger.warn({ dataDir: config.dataDir }, message),
    });
    logger.info({ dataDir: config.dataDir, started: embedded.owned }, 'embedded PostgreSQL ready');
    return embedded.url;
  });
  let dataSource: DataSource | undefined;
  let pool: Pool | undefined;
  let masterKey: MasterKey;
  let signingKeys: SigningKeyStore | undefined;
  let checkpointer: AuditCheckpointer | undefined;
  let checkpointPool: Pool | undefined;
  /** Set when the final checkpoint starts: the process is stopping. */
  let stopping = false;
  try {
    if (embedded) {
      const connected = await connectAsServiceLogin(url, embedded.serviceLogin, embedded.serviceUrl, poolSize, boundsOf(config), config, logger);
      dataSource = connected.dataSource;
      pool = connected.pool;
    } else {
      // The owner (WRIT_MIGRATION_DATABASE_URL, else WRIT_DATABASE_URL's login) migrates on a
      // connection of its own, without the services' deadlines: waiting for the migration lock
      // while another instance migrates, and a long migration, are no request (lock_timeout and
      // statement_timeout would fail the start). The services then connect as WRIT_DATABASE_URL's login.
      const owner = createDataSource(config.migrationDatabaseUrl ?? url, { poolSize: 1, applicationName: 'writ-migrate' });
      try {
        await step(config.migrationDatabaseUrl ? 'cannot reach the database as the migration owner' : 'cannot reach the database', () => owner.initialize());
        await step('database migration failed', () => migrateAtStart(owner, config, logger));
      } finally {
        if (owner.isInitialized) await owner.destroy().catch(() => undefined);
      }
      ({ dataSource, pool } = await openServiceConnections(url, poolSize, boundsOf(config)));
      // The migration creates writ_service only where the migrating role may create roles, and
      // its notice is not shown by the driver: say it here, once per start.
      const role: unknown = await dataSource.query(`SELECT 1 FROM pg_roles WHERE rolname = 'writ_service'`).catch(() => [{}]);
      if (Array.isArray(role) && role.length === 0) {
        logger.warn(
          'the role writ_service does not exist (the migrating role may not create roles): create it by hand with its grants, see docs/operations.md#an-external-postgresql',
        );
      }
    }
    const { key, source } = await step('cannot read the master key', () =>
      resolveMasterKey(config.masterKey, config.dataDir, !config.databaseUrl, config.masterKeyPrevious),
    );
    masterKey = key;
    if (source !== 'environment') {
      logger.warn({ file: join(config.dataDir, 'master-key') }, 'WRIT_MASTER_KEY is not set: using a generated development key kept in the data directory');
    }
    const keys = (signingKeys = new SigningKeyStore(pool, masterKey, config.issuer, config.operations.ecdsa === 'thread-pool'));
    await step('cannot load the signing keys (is WRIT_MASTER_KEY the one they were sealed with?)', () => keys.init());
    if (options.checkpoints ?? true) {
      // A connection of its own: checkpoints never wait for the request pool, and the last one
      // is still written at shutdown, after the apps have closed the request pool.
      checkpointPool = new Pool({
        connectionString: embedded ? embedded.serviceUrl : url,
        max: 1,
        connectionTimeoutMillis: 5_000,
        idleTimeoutMillis: 30_000,
        application_name: 'writ-checkpoints',
        // The request pool's deadlines: a checkpoint on a frozen or unreachable server fails and
        // is retried at the next trigger, instead of hanging (and every later checkpoint with it).
        ...sessionDeadlines(config),
      });
      checkpointPool.on('error', (error) => logger.warn({ err: error.message }, 'audit checkpoint connection lost'));
      checkpointer = new AuditCheckpointer(checkpointPool, checkpointKey(masterKey), {
        every: config.auditCheckpointEvery,
        intervalMs: config.auditCheckpointSeconds * 1000,
        file: config.auditCheckpointFile,
        onError: (error) => {
          const err = error instanceof Error ? error.message : String(error);
          // Stopping, on a server that is itself shutting down (Ctrl-C in a terminal signals the
          // embedded PostgreSQL with this process): nothing is wrong, and nothing is lost but the
          // timing of the last checkpoint, which the next start writes at its first trigger.
          if (stopping && serverShuttingDown(error)) {
            logger.warn({ err }, 'last audit checkpoint not written: PostgreSQL was stopping too; the next start writes it');
          } else {
            logger.error({ err }, 'audit checkpoint not written; retrying at the next trigger');
          }
        },
        onAltered: ({ seq, recorded }) =>
          logger.error(
            { seq, recorded_in: recorded ? config.auditCheckpointFile : undefined },
            'the audit log was altered in the database: an event this instance wrote is no longer the one stored (audit:verify reports it)',
          ),
      });
      await step('cannot start the audit checkpoints', () => checkpointer!.start());
    }
  } catch (error) {
    // Leave nothing running behind a service that does not start.
    signingKeys?.stopMaintenance();
    await pool?.end().catch(() => undefined);
    if (dataSource?.isInitialized) await dataSource.destroy().catch(() => undefined);
    await checkpointPool?.end().catch(() => undefined);
    if (embedded) await embedded.stop().catch(() => undefined);
    await stopTracing?.();
    throw error;
  }
  const keys = signingKeys;
  const servicePool = pool;
  pool.on('error', (error) => logger.warn({ err: error.message }, 'idle database connection lost'));
  await warnIfPoolExceedsServer(pool, logger);
  traceQueries(pool);
  const metrics = new WritMetrics(pool);
  const signer = checkpointer;
  if (signer) metrics.trackCheckpoints(() => signer.status());
  metrics.trackMasterKey(() => masterKey.previousCount);
  const changes = new ChangeListener({
    connection: { ...pool.options, application_name: 'writ-listen' },
    onLost: (error) =>
      logger.warn({ err: error }, 'not listening for changes (reconnecting): cached clients and connectors are read from the database meanwhile'),
  });
  // Signing keys are reloaded at once when any instance rotates or retires one; the periodic
  // refresh stays as the fallback.
  changes.subscribe(SIGNING_KEYS_CHANGED_CHANNEL, {
    changed: () => keys.reloadSoon(),
    reset: () => keys.reloadSoon(),
  });
  await changes.start();
  // Verification reads on a connection of its own: a long walk never holds one the hot paths need.
  const verifyPool = new Pool({
    connectionString: embedded ? embedded.serviceUrl : url,
    max: 1,
    connectionTimeoutMillis: config.operations.checkoutTimeoutMs,
    idleTimeoutMillis: 10_000,
    ...sessionDeadlines(config),
    application_name: 'writ-verify',
  });
  verifyPool.on('error', (error) => logger.warn({ err: error.message }, 'audit verification connection lost'));
  const audit = new AuditService(pool, {
    // Checkpoints signed before a master key rotation verify with the previous keys' public
    // keys, and once a previous key is dropped, with its public key kept in the configuration
    // (trusted only for what it signed before the current keys took over).
    checkpointKeys: masterKey.checkpointPublicKeys(),
    retiredCheckpointKeys: config.auditCheckpointPublicKeys,
    checkpointFile: config.auditCheckpointFile,
    onAppended: checkpointer ? (events) => checkpointer.noteAppended(events) : undefined,
    onNotice: (message) => logger.warn(message),
    onOneMessage: (committed) => metrics.auditOneMessage(committed),
    onCommitted: (records, seconds) => {
      metrics.auditCommitted(records, seconds);
      retroactiveSpan('audit.commit', seconds, { 'writ.audit.events': records.length });
    },
    verifyPool,
    requestId: () => currentRequestContext()?.callerRequestId,
  });
  // Scheduled rotations and retirements commit with their audit events (`key.rotated`, `key.retired`).
  keys.recordChangesWith(audit);
  keys.startMaintenance({
    refreshMs: config.operations.keyRefreshSeconds * 1000,
    rotationDays: config.operations.keyRotationDays,
    onError: (error) => logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'signing keys not refreshed; retrying'),
    onChange: (change) => logger.info(change, 'signing keys rotated or retired'),
  });
  const rowIntegrity = new RowIntegrity(masterKey, (table, id) => {
    metrics.integrityFailed(table);
    logger.error({ table, id }, 'a row that grants authority does not carry a valid integrity tag (changed outside Writ?): refused');
  });
  // The upgrade to tagged rows, once (the first instance to start; others wait for it), in
  // batches. Not fatal: the batches committed stay tagged, the rows still untagged are refused
  // until a later start resumes it.
  try {
    const tagged = await backfillRowIntegrity(pool, audit, rowIntegrity);
    if (tagged !== 'done' && Object.values(tagged).some((count) => count > 0))
      logger.warn({ tagged }, 'rows written before integrity tags were tagged (trust on first use at the upgrade)');
  } catch (error) {
    logger.error(
      { err: error instanceof Error ? error.message : String(error) },
      'rows written before integrity tags were not all tagged: those still untagged are refused until a later start resumes the tagging',
    );
  }
  const source = dataSource;
  // The runtime owns the data source: Nest's TypeORM module destroys it when an app closes,
  // and with several apps over one runtime the first to close would cut the others' requests
  // and the audit writer's last batches ("Cannot use a pool after calling end on the pool").
  const destroySource = source.destroy.bind(source);
  source.destroy = async () => undefined;
  // Once, whoever asks first: close(), or the embedded cluster stopping on a signal.
  let lastCheckpoint: Promise<void> | undefined;
  const finalCheckpoint = () =>
    (lastCheckpoint ??= (async () => {
      stopping = true;
      await audit.drain().catch(() => undefined);
      await checkpointer?.stop().catch(() => undefined);
      await checkpointPool?.end().catch(() => undefined);
    })());
  embedded?.beforeStop(finalCheckpoint);
  return {
    config,
    logger,
    dataSource: source,
    pool,
    masterKey,
    rowIntegrity,
    signingKeys: keys,
    audit,
    checkpointer,
    revoker: new CredentialRevoker(pool, audit),
    changes,
    metrics,
    fatal: () => embedded?.fatal(),
    close: async () => {
      keys.stopMaintenance();
      await changes.stop();
      metrics.close();
      await finalCheckpoint();
      await verifyPool.end().catch(() => undefined);
      await servicePool.end().catch(() => undefined);
      if (source.isInitialized) await destroySource().catch(() => undefined);
      // Last: nothing of this process uses PostgreSQL any more.
      if (embedded) await embedded.stop();
      await stopTracing?.();
    },
  };
}

/**
 * The pool size is configured (`WRIT_DB_POOL_SIZE`), not derived from the server: say so at
 * start when this one process alone could take more connections than PostgreSQL offers to
 * non-superusers, which would turn load into refused connections (503) instead of queueing.
 */
async function warnIfPoolExceedsServer(pool: Pool, logger: Logger): Promise<void> {
  try {
    const { rows } = await pool.query<{ max: number; reserved: number }>(
      `SELECT current_setting('max_connections')::int AS max, current_setting('superuser_reserved_connections')::int AS reserved`,
    );
    const available = (rows[0]?.max ?? 0) - (rows[0]?.reserved ?? 0);
    // Besides the pools: checkpoints, verification and the change listener, one each.
    const wanted = (pool.options.max ?? 10) + TYPEORM_POOL_SIZE + 3;
    if (available > 0 && wanted > available) {
      logger.warn(
        { pool: pool.options.max, max_connections: rows[0].max },
        'WRIT_DB_POOL_SIZE (plus 7) exceeds the connections PostgreSQL offers: lower it or raise max_connections',
      );
    } else if (available > 0 && wanted > available / 2) {
      logger.info(
        { pool: pool.options.max, max_connections: rows[0].max },
        "this process may use more than half of PostgreSQL's connections: size WRIT_DB_POOL_SIZE × instances below max_connections",
      );
    }
  } catch {
    // Not knowing is no reason not to start.
  }
}

const checkpointKeys = new WeakMap<MasterKey, CheckpointSigningKey>();

/** The checkpoint signing key of a master key, derived once. */
function checkpointKey(master: MasterKey): CheckpointSigningKey {
  let key = checkpointKeys.get(master);
  if (!key) checkpointKeys.set(master, (key = master.checkpointSigningKey()));
  return key;
}

/** SHA-256 (hex) of an admin token, as stored. */
export function hashAdminToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Makes sure the bootstrap admin token exists: `WRIT_ADMIN_TOKEN`, or one generated on first
 * start into `dataDir/admin-token` (mode 0600). Only its hash is stored in PostgreSQL.
 */
export async function ensureBootstrapAdminToken(runtime: Runtime): Promise<{ file?: string; created: boolean }> {
  const { config, pool } = runtime;
  let token = config.adminToken;
  let file: string | undefined;
  if (!token) {
    file = join(config.dataDir, 'admin-token');
    await ensurePrivateDirectory(config.dataDir);
    if (existsSync(file)) {
      // Refused when another user could read it, or could have planted a token they know.
      token = (await readPrivateFile(file)).trim();
    } else {
      token = `writ_admin_${randomBytes(32).toString('base64url')}`;
      await writeFile(file, token + '\n', { mode: 0o600, flag: 'wx' });
    }
  }
  const id = randomUUID();
  const tokenHash = hashAdminToken(token);
  // Tagged as every admin token (role and hash under the master key); an existing row is left as it is.
  const { rowCount } = await pool.query(
    `INSERT INTO admin_tokens (id, name, role, token_hash, created_by, created_at, integrity_tag)
     VALUES ($1, 'bootstrap', 'admin', $2, 'system', now(), $3)
     ON CONFLICT (token_hash) DO NOTHING`,
    [id, tokenHash, runtime.rowIntegrity.tagAdminToken({ id, role: 'admin', tokenHash, expiresAt: null })],
  );
  return { file, created: (rowCount ?? 0) > 0 };
}

/**
 * Whether a query failed because PostgreSQL is shutting down: `57P03` (cannot connect now, "the
 * database system is shutting down") or `57P01` (admin shutdown, a connection it terminated).
 */
export function serverShuttingDown(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '57P03' || code === '57P01';
}
