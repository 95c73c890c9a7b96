import { randomBytes, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Pool } from 'pg';
import type { DataSource } from 'typeorm';
import { AuditCheckpointer, AuditService } from '@writ/audit';
import { loadConfig, WritConfig } from '@writ/config';
import { createDataSource, EmbeddedDatabase, ensureServiceLogin, migrate, poolOf, ServiceLogin, startEmbeddedPostgres } from '@writ/database';
import { CredentialRevoker } from '@writ/grants';
import { CheckpointSigningKey, MasterKey, resolveMasterKey, SigningKeyStore } from '@writ/keys';
import { createLogger } from './logger';

/** Everything a Writ service needs, created once per process before Nest starts. */
export interface Runtime {
  readonly config: WritConfig;
  readonly logger: Logger;
  readonly dataSource: DataSource;
  readonly pool: Pool;
  readonly masterKey: MasterKey;
  readonly signingKeys: SigningKeyStore;
  readonly audit: AuditService;
  /** Signs checkpoints of the audit chain head (absent when the runtime was asked for none). */
  readonly checkpointer: AuditCheckpointer | undefined;
  readonly revoker: CredentialRevoker;
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

/**
 * Migrates as the owner (`ownerUrl`, the embedded cluster's superuser), makes `login` a member
 * of writ_service and nothing more, then opens the services' data source as that login (no
 * superuser, owner of nothing), as with an external database: the services cannot disable the
 * audit triggers nor change audit rows.
 */
export async function connectAsServiceLogin(
  ownerUrl: string,
  login: ServiceLogin,
  serviceUrl: string,
  poolSize?: number,
): Promise<{ dataSource: DataSource; applied: string[] }> {
  const owner = createDataSource(ownerUrl, { poolSize: 1, applicationName: 'writ-migrate' });
  let applied: string[];
  try {
    await step('cannot reach the database', () => owner.initialize());
    applied = await step('database migration failed', () => migrate(owner));
    await step('cannot set up the service login', () => ensureServiceLogin(poolOf(owner), login));
  } finally {
    if (owner.isInitialized) await owner.destroy().catch(() => undefined);
  }
  const dataSource = createDataSource(serviceUrl, { poolSize });
  await step('cannot reach the database as the service login', () => dataSource.initialize());
  return { dataSource, applied };
}

/**
 * Connects to PostgreSQL (embedded unless `WRIT_DATABASE_URL`), migrates, resolves the master
 * key and loads the signing keys. Any failure is a {@link StartupError}: no database, no keys,
 * no service.
 */
export async function createRuntime(options: RuntimeOptions = {}): Promise<Runtime> {
  const config = options.config ?? (await step('configuration', async () => loadConfig()));
  const logger = options.logger ?? createLogger(config.logLevel);
  let embedded: EmbeddedDatabase | undefined;
  const url = await step('cannot start the embedded PostgreSQL', async () => {
    if (config.databaseUrl) return config.databaseUrl;
    embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, onLog: (line) => logger.debug({ postgres: line }) });
    logger.info({ dataDir: config.dataDir, started: embedded.owned }, 'embedded PostgreSQL ready');
    return embedded.url;
  });
  let dataSource: DataSource | undefined;
  let masterKey: MasterKey;
  let signingKeys: SigningKeyStore;
  let checkpointer: AuditCheckpointer | undefined;
  let checkpointPool: Pool | undefined;
  try {
    if (embedded) {
      const connected = await connectAsServiceLogin(url, embedded.serviceLogin, embedded.serviceUrl, options.poolSize);
      dataSource = connected.dataSource;
      if (connected.applied.length) logger.info({ migrations: connected.applied }, 'database migrated');
    } else {
      if (config.migrationDatabaseUrl) {
        // The owner migrates; the services then connect as WRIT_DATABASE_URL's login.
        const owner = createDataSource(config.migrationDatabaseUrl, { poolSize: 1, applicationName: 'writ-migrate' });
        try {
          await step('cannot reach the database as the migration owner', () => owner.initialize());
          const applied = await step('database migration failed', () => migrate(owner));
          if (applied.length) logger.info({ migrations: applied }, 'database migrated');
        } finally {
          if (owner.isInitialized) await owner.destroy().catch(() => undefined);
        }
      }
      dataSource = createDataSource(url, { poolSize: options.poolSize });
      await step('cannot reach the database', () => dataSource!.initialize());
      if (!config.migrationDatabaseUrl) {
        const applied = await step('database migration failed', () => migrate(dataSource!));
        if (applied.length) logger.info({ migrations: applied }, 'database migrated');
      }
    }
    const { key, source } = await step('cannot read the master key', () => resolveMasterKey(config.masterKey, config.dataDir, !config.databaseUrl));
    masterKey = key;
    if (source !== 'environment') {
      logger.warn({ file: join(config.dataDir, 'master-key') }, 'WRIT_MASTER_KEY is not set: using a generated development key kept in the data directory');
    }
    signingKeys = new SigningKeyStore(poolOf(dataSource), masterKey, config.issuer);
    await step('cannot load the signing keys (is WRIT_MASTER_KEY the one they were sealed with?)', () => signingKeys.init());
    if (options.checkpoints ?? true) {
      // A connection of its own: checkpoints never wait for the request pool, and the last one
      // is still written at shutdown, after the apps have closed the request pool.
      checkpointPool = new Pool({
        connectionString: embedded ? embedded.serviceUrl : url,
        max: 1,
        connectionTimeoutMillis: 5_000,
        idleTimeoutMillis: 30_000,
        application_name: 'writ-checkpoints',
      });
      checkpointPool.on('error', (error) => logger.warn({ err: error.message }, 'audit checkpoint connection lost'));
      checkpointer = new AuditCheckpointer(checkpointPool, checkpointKey(masterKey), {
        every: config.auditCheckpointEvery,
        intervalMs: config.auditCheckpointSeconds * 1000,
        file: config.auditCheckpointFile,
        onError: (error) =>
          logger.error({ err: error instanceof Error ? error.message : String(error) }, 'audit checkpoint not written; retrying at the next trigger'),
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
    if (dataSource?.isInitialized) await dataSource.destroy().catch(() => undefined);
    await checkpointPool?.end().catch(() => undefined);
    if (embedded) await embedded.stop().catch(() => undefined);
    throw error;
  }
  const pool = poolOf(dataSource);
  const audit = new AuditService(pool, {
    checkpointKeys: [checkpointKey(masterKey).publicJwk],
    checkpointFile: config.auditCheckpointFile,
    onAppended: checkpointer ? (events) => checkpointer.noteAppended(events) : undefined,
  });
  const source = dataSource;
  // Once, whoever asks first: close(), or the embedded cluster stopping on a signal.
  let lastCheckpoint: Promise<void> | undefined;
  const finalCheckpoint = () =>
    (lastCheckpoint ??= (async () => {
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
    signingKeys,
    audit,
    checkpointer,
    revoker: new CredentialRevoker(pool, audit),
    close: async () => {
      await finalCheckpoint();
      if (source.isInitialized) await source.destroy().catch(() => undefined);
      if (embedded) await embedded.stop();
    },
  };
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
    if (existsSync(file)) {
      token = (await readFile(file, 'utf8')).trim();
    } else {
      await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
      token = `writ_admin_${randomBytes(32).toString('base64url')}`;
      await writeFile(file, token + '\n', { mode: 0o600, flag: 'wx' });
    }
  }
  const { rowCount } = await pool.query(
    `INSERT INTO admin_tokens (id, name, role, token_hash, created_by, created_at)
     VALUES (gen_random_uuid(), 'bootstrap', 'admin', $1, 'system', now())
     ON CONFLICT (token_hash) DO NOTHING`,
    [hashAdminToken(token)],
  );
  return { file, created: (rowCount ?? 0) > 0 };
}
