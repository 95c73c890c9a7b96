import { Pool } from 'pg';
import { DataSource, MigrationExecutor } from 'typeorm';
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
const MIGRATION_LOCK = 7_311_042;

/** Runs pending migrations, one instance at a time. */
export async function migrate(dataSource: DataSource): Promise<string[]> {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    await runner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const executor = new MigrationExecutor(dataSource, runner);
    executor.transaction = 'each';
    const applied = await executor.executePendingMigrations();
    return applied.map((migration) => migration.name);
  } finally {
    await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    await runner.release();
  }
}
