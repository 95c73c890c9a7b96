import { Pool } from 'pg';
import { DataSource, MigrationExecutor } from 'typeorm';
import { PostgresDriver } from 'typeorm/driver/postgres/PostgresDriver';
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
}

/** A TypeORM data source over Writ's schema; migrations are explicit, never `synchronize`. */
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
    extra: {
      max: options.poolSize ?? 20,
      connectionTimeoutMillis: options.checkoutTimeoutMs ?? 5_000,
      idleTimeoutMillis: 30_000,
      ...(options.statementTimeoutMs ? { statement_timeout: options.statementTimeoutMs, query_timeout: options.statementTimeoutMs + 1_000 } : {}),
      ...(options.lockTimeoutMs ? { lock_timeout: options.lockTimeoutMs } : {}),
    },
  });
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

/** The node-postgres pool behind a data source, for hot paths that speak SQL directly. */
export function poolOf(dataSource: DataSource): Pool {
  return (dataSource.driver as PostgresDriver).master as Pool;
}
