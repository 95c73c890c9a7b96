import { Pool } from 'pg';
import { DataSource, MigrationExecutor, QueryRunner } from 'typeorm';
import { ENTITIES } from './entities';
import { MIGRATIONS } from './migrations';

/** Options of {@link createDataSource}. */
export interface DataSourceOptions {
  /** Connections in this process's pool. */
  poolSize?: number;
  /** Shown in `pg_stat_activity`. */
  applicationName?: string;
  /** Longest wait for a connection from the pool or a new one (default 5000 ms). */
  checkoutTimeoutMs?: number;
  /**
   * PostgreSQL `statement_timeout` of every connection (none by default: migrations may be
   * long); the client also gives up a query one second after it, for a server that is frozen
   * rather than slow.
   */
  statementTimeoutMs?: number;
  /** PostgreSQL `lock_timeout` of every connection (none by default). */
  lockTimeoutMs?: number;
  /**
   * PostgreSQL `idle_in_transaction_session_timeout` of every connection (none by default): a
   * transaction left open ends with its session instead of holding its locks.
   */
  idleInTransactionTimeoutMs?: number;
}

/** The node-postgres settings both pools are built from: size, deadlines and timeouts. */
function poolSettings(options: DataSourceOptions, defaultSize: number) {
  return {
    max: options.poolSize ?? defaultSize,
    connectionTimeoutMillis: options.checkoutTimeoutMs ?? 5_000,
    idleTimeoutMillis: 30_000,
    ...(options.statementTimeoutMs ? { statement_timeout: options.statementTimeoutMs, query_timeout: options.statementTimeoutMs + 1_000 } : {}),
    ...(options.lockTimeoutMs ? { lock_timeout: options.lockTimeoutMs } : {}),
    ...(options.idleInTransactionTimeoutMs ? { idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs } : {}),
  };
}

/**
 * A TypeORM data source over Writ's schema (migrations, repositories); migrations are
 * explicit, never `synchronize`. Its pool is its own (default 2 connections): the services'
 * SQL runs on the pool of {@link createPool}.
 */
export function createDataSource(url: string, options: DataSourceOptions = {}): DataSource {
  return new DataSource({
    type: 'postgres',
    url,
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsTableName: 'writ_migrations',
    synchronize: false,
    migrationsRun: false,
    logging: false,
    applicationName: options.applicationName ?? 'writ',
    extra: poolSettings(options, 2),
  });
}

/**
 * The node-postgres pool the services' SQL runs on (`PG_POOL`): `poolSize` connections
 * (default 20), with the same checkout deadline, statement and lock timeouts as the data
 * source. Its owner ends it.
 */
export function createPool(url: string, options: DataSourceOptions = {}): Pool {
  const pool = new Pool({ connectionString: url, application_name: options.applicationName ?? 'writ', ...poolSettings(options, 20) });
  // An idle connection the server ends (restart, administrator command) is dropped by the
  // pool itself; without a listener its error would end the process (as TypeORM's pool, it
  // is no reason to). Owners may add a listener that logs it.
  pool.on('error', () => undefined);
  return pool;
}

/** Key of the advisory lock that serialises migrations between instances starting together. */
export const MIGRATION_LOCK = 7_311_042;

/**
 * Thrown by {@link migrate} when the database holds applied migrations this build does not know:
 * a newer release migrated it (a rollback to an older release, or an older instance starting
 * during a rolling upgrade). `unknown` lists their names, newest first.
 */
export class NewerSchemaError extends Error {
  constructor(readonly unknown: readonly string[]) {
    super(`the database holds ${unknown.length} migration(s) this build does not know, the newest ${unknown[0]}`);
    this.name = 'NewerSchemaError';
  }
}

/** Options of {@link migrate}. */
export interface MigrateOptions {
  /**
   * Go on when the database holds migrations this build does not know (they are returned in
   * {@link MigrationOutcome.unknown}) instead of throwing {@link NewerSchemaError}.
   */
  allowNewerSchema?: boolean;
  /**
   * PostgreSQL `lock_timeout` of the migration statements (default {@link MIGRATION_LOCK_TIMEOUT_MS};
   * 0: none). A schema change waiting for its lock behind a long transaction queues every writer
   * of its table behind it; past this it gives up instead, and is tried again.
   */
  lockTimeoutMs?: number;
  /** Runs in all before giving up, when a statement keeps timing out on its lock or is chosen by a deadlock (default {@link MIGRATION_ATTEMPTS}). */
  attempts?: number;
  /** Wait before the second run; doubled before each next one, up to 30 s (default 1000 ms). */
  retryDelayMs?: number;
  /** How often a start waiting for another instance's migrations asks for the migration lock again (default 250 ms). */
  lockPollMs?: number;
  /** Called before each new run: what failed, the run that failed (1 for the first), and the wait before the next. */
  onRetry?: (error: Error, attempt: number, delayMs: number) => void;
}

/** Default `lock_timeout` of the migrations: below the services' own (`WRIT_DB_LOCK_TIMEOUT_MS`, 3 s), so that a writer queued behind a waiting schema change is let through before it fails. */
export const MIGRATION_LOCK_TIMEOUT_MS = 1_000;

/** Default number of runs of the pending migrations when their locks keep timing out. */
export const MIGRATION_ATTEMPTS = 10;

/** What {@link migrate} did and found. */
export interface MigrationOutcome {
  /** Migrations this call applied, in order. */
  applied: string[];
  /** Applied migrations this build does not know (only with `allowNewerSchema`), newest first. */
  unknown: string[];
}

/** SQLSTATE of a statement that gave up on a lock (`lock_timeout`, `NOWAIT`), or of a deadlock victim: both worth another run. */
const RETRYABLE = new Set(['55P03', '40P01']);

function sqlState(error: unknown): string | undefined {
  const e = error as { code?: unknown; driverError?: { code?: unknown } };
  const code = e?.driverError?.code ?? e?.code;
  return typeof code === 'string' ? code : undefined;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs pending migrations, one instance at a time. First, under the same lock (so that what a
 * newer instance is migrating right now is seen once it is done), it reads the migrations table
 * once: an applied migration this build does not know means a newer release migrated the
 * database, and nothing is run ({@link NewerSchemaError}) unless `allowNewerSchema`. A known
 * migration missing below the newest applied one is run like any pending one (TypeORM's order).
 *
 * The migration lock is a session advisory lock asked for with `pg_try_advisory_lock` every
 * `lockPollMs`, never waited for inside a statement: a session waiting in a statement holds a
 * snapshot, which a concurrent index build (`CREATE INDEX CONCURRENTLY`) of the instance holding
 * the lock waits for, and PostgreSQL would then end one of the two as a deadlock.
 *
 * Every statement runs under `lock_timeout` (`lockTimeoutMs`, except the concurrent index
 * changes: they queue no writer). A run that fails on it, or as a deadlock's victim, is rolled
 * back (its migration's transaction; a migration without one is re-runnable), the migration lock
 * is let go (an instance waiting for it may be what the deadlock was with), and after a pause the
 * pending migrations run again, up to `attempts` runs.
 */
export async function migrate(dataSource: DataSource, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  const attempts = Math.max(1, options.attempts ?? MIGRATION_ATTEMPTS);
  const applied: string[] = [];
  for (let attempt = 1; ; attempt++) {
    try {
      const outcome = await migrateOnce(dataSource, options, applied);
      return { applied, unknown: outcome.unknown };
    } catch (error) {
      const code = sqlState(error);
      if (attempt >= attempts || !code || !RETRYABLE.has(code)) throw error;
      const delayMs = Math.min((options.retryDelayMs ?? 1_000) * 2 ** (attempt - 1), 30_000);
      options.onRetry?.(error as Error, attempt, delayMs);
      await sleep(delayMs);
    }
  }
}

/** One run of {@link migrate}: takes the lock, checks, runs what is pending (adding each one applied to `applied`), lets the lock go. */
async function migrateOnce(dataSource: DataSource, options: MigrateOptions, applied: string[]): Promise<{ unknown: string[] }> {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  let locked = false;
  try {
    while (!(locked = ((await runner.query('SELECT pg_try_advisory_lock($1) AS locked', [MIGRATION_LOCK])) as { locked: boolean }[])[0].locked)) {
      await sleep(options.lockPollMs ?? 250);
    }
    await runner.query(`SELECT set_config('lock_timeout', $1, false)`, [`${options.lockTimeoutMs ?? MIGRATION_LOCK_TIMEOUT_MS}ms`]);
    const executor = new MigrationExecutor(dataSource, runner);
    executor.transaction = 'each';
    const known = new Set((await executor.getAllMigrations()).map((migration) => migration.name));
    const before = await appliedMigrations(runner, dataSource);
    const unknown = before.filter((migration) => !known.has(migration.name)).map((migration) => migration.name);
    if (unknown.length > 0 && !options.allowNewerSchema) throw new NewerSchemaError(unknown);
    try {
      applied.push(...(await executor.executePendingMigrations()).map((migration) => migration.name));
    } catch (error) {
      // The ones this run applied before the failure stay applied: report them with the next run's.
      const earlier = new Set(before.map((migration) => migration.name));
      const now = await appliedMigrations(runner, dataSource).catch(() => []);
      applied.push(
        ...now
          .reverse()
          .filter((migration) => !earlier.has(migration.name))
          .map((migration) => migration.name),
      );
      throw error;
    }
    return { unknown };
  } finally {
    await runner.query('RESET lock_timeout').catch(() => undefined);
    if (locked) await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    await runner.release();
  }
}

/** The rows of the migrations table, newest first; none before the first migration created it. */
async function appliedMigrations(runner: QueryRunner, dataSource: DataSource): Promise<{ name: string }[]> {
  const table = dataSource.driver.escape(dataSource.options.migrationsTableName ?? 'migrations');
  try {
    return (await runner.query(`SELECT "name" FROM ${table} ORDER BY "timestamp" DESC, "id" DESC`)) as { name: string }[];
  } catch (error) {
    // 42P01 undefined_table: a new database (TypeORM creates the table next).
    if ((error as { driverError?: { code?: string } }).driverError?.code === '42P01' || (error as { code?: string }).code === '42P01') return [];
    throw error;
  }
}
