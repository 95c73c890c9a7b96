import { Client } from 'pg';
import { MIGRATION_LOCK } from '@writ/database';
import { connectAsServiceLogin, StartupError } from '@writ/platform';
import { createTestDatabase, SERVICE_LOGIN_ENV, TEST_SERVICE_USER, TestDatabase } from '@writ/testing';
import { buildOnce, startWrit, WritProcess } from './support/writ-process';

jest.setTimeout(240_000);

/** A migration of a release newer than this build, as that release records it. */
const FUTURE = 'FutureTable1924992000000';
const OLDER_FUTURE = 'FutureColumns1893456000000';

async function sql<T extends object = Record<string, unknown>>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Records migrations as a newer release would have (TypeORM's row: the name's last 13 digits are its timestamp). */
async function migrateAsNewerRelease(db: TestDatabase, names: string[]): Promise<void> {
  for (const name of names) await sql(db.url, `INSERT INTO writ_migrations ("timestamp", "name") VALUES ($1, $2)`, [name.slice(-13), name]);
}

/** The output of a start that must be refused; a start that is not is stopped, and fails the test. */
async function refusedStart(env: Record<string, string>): Promise<string> {
  let writ: WritProcess;
  try {
    writ = await startWrit({ env, readyTimeoutMs: 60_000 });
  } catch (error) {
    return (error as Error).message;
  }
  writ.child.kill('SIGKILL');
  await writ.exited;
  throw new Error('writ started on a database a newer release migrated');
}

/**
 * An older build started on a database a newer release migrated (a rollback, or an old instance
 * restarting during a rolling upgrade) refuses to start, as Flyway's validate does, unless the
 * operator says the newer migrations are backward compatible (WRIT_ALLOW_NEWER_SCHEMA=true).
 */
describe('faults: a database migrated by a newer release', () => {
  let db: TestDatabase;
  const masterKey = Buffer.alloc(32, 7).toString('base64');

  beforeAll(async () => {
    buildOnce();
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('starts again on its own schema (a normal restart)', async () => {
    for (let start = 0; start < 2; start += 1) {
      const writ = await startWrit({ env: { WRIT_DATABASE_URL: db.serviceUrl ?? db.url, WRIT_MASTER_KEY: masterKey } });
      writ.child.kill('SIGTERM');
      expect((await writ.exited).code).toBe(0);
      expect(writ.output()).not.toContain('newer Writ release');
    }
  });

  it('does not start, naming the newest unknown migration and what to do, and exits 1 (launcher)', async () => {
    await migrateAsNewerRelease(db, [OLDER_FUTURE, FUTURE]);
    const refused = await refusedStart({ WRIT_DATABASE_URL: db.serviceUrl ?? db.url, WRIT_MASTER_KEY: masterKey });
    expect(refused).toMatch(/^writ exited \(code 1\) before it was ready/);
    const line = refused.split('\n').find((text) => text.startsWith('writ: '));
    expect(line).toBe(
      `writ: writ cannot start: the database was migrated by a newer Writ release: it holds migration ${FUTURE} and 1 more, which this build does not know. ` +
        'Upgrade this instance to that release, or roll back by restoring the backup taken before the upgrade (docs/operations.md#upgrading). ' +
        'WRIT_ALLOW_NEWER_SCHEMA=true starts it anyway: only for an older instance during a rolling upgrade whose new migrations are backward compatible',
    );
    // Refused before anything ran: the newer release's rows are as it left them.
    expect((await sql<{ name: string }>(db.url, `SELECT name FROM writ_migrations WHERE name LIKE 'Future%' ORDER BY name`)).map((row) => row.name)).toEqual([
      OLDER_FUTURE,
      FUTURE,
    ]);
  });

  it('is refused the same way when the owner migrates (WRIT_MIGRATION_DATABASE_URL)', async () => {
    const refused = await refusedStart({ WRIT_DATABASE_URL: db.serviceUrl ?? db.url, WRIT_MIGRATION_DATABASE_URL: db.url, WRIT_MASTER_KEY: masterKey });
    expect(refused).toMatch(/^writ exited \(code 1\) before it was ready/);
    expect(refused).toContain(`writ: writ cannot start: the database was migrated by a newer Writ release: it holds migration ${FUTURE} and 1 more`);
  });

  it('is refused the same way through the embedded path (owner migrates, then the service login), leaving no connection behind', async () => {
    const password = process.env[SERVICE_LOGIN_ENV];
    if (!password || !db.serviceUrl) throw new Error('the global setup made no service login');
    const refused = await connectAsServiceLogin(db.url, { user: TEST_SERVICE_USER, password }, db.serviceUrl, 2).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(StartupError);
    expect((refused as Error).message).toMatch(new RegExp(`^the database was migrated by a newer Writ release: it holds migration ${FUTURE} and 1 more`));
    const left = await sql<{ n: number }>(db.url, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'writ-migrate'`, [
      db.name,
    ]);
    expect(left[0].n).toBe(0);
  });

  it('starts with WRIT_ALLOW_NEWER_SCHEMA=true, warning with every unknown migration', async () => {
    const writ = await startWrit({ env: { WRIT_DATABASE_URL: db.serviceUrl ?? db.url, WRIT_MASTER_KEY: masterKey, WRIT_ALLOW_NEWER_SCHEMA: 'true' } });
    try {
      const warning = writ
        .output()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { level: number; msg: string; unknown_migrations?: string[] })
        .find((entry) => entry.msg.startsWith('WRIT_ALLOW_NEWER_SCHEMA=true'));
      expect(warning).toMatchObject({ level: 40, unknown_migrations: [FUTURE, OLDER_FUTURE] });
      expect((await fetch(`${writ.adminUrl}/health/ready`)).status).toBe(200);
    } finally {
      writ.child.kill('SIGTERM');
      expect((await writ.exited).code).toBe(0);
    }
  });
});

/**
 * Instances started together wait for the one that migrates, however long its migrations take:
 * the migration lock is not subject to the services' request deadlines (`WRIT_DB_LOCK_TIMEOUT_MS`,
 * `WRIT_DB_STATEMENT_TIMEOUT_MS`).
 */
describe('faults: instances starting while another migrates', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    buildOnce();
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('wait for the migration lock past the request lock timeout, then start', async () => {
    // Another instance migrating: it holds the lock for longer than this one's lock_timeout.
    const migrating = new Client({ connectionString: db.url });
    await migrating.connect();
    await migrating.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    const released = new Promise<void>((resolve) => setTimeout(resolve, 3_000)).then(() => migrating.end());
    try {
      const writ = await startWrit({
        env: {
          WRIT_DATABASE_URL: db.serviceUrl ?? db.url,
          WRIT_MASTER_KEY: Buffer.alloc(32, 7).toString('base64'),
          WRIT_DB_LOCK_TIMEOUT_MS: '200',
          WRIT_DB_STATEMENT_TIMEOUT_MS: '500',
        },
      });
      writ.child.kill('SIGTERM');
      expect((await writ.exited).code).toBe(0);
    } finally {
      await released;
    }
  });
});

/**
 * A migration whose table a long transaction holds gives up on WRIT_MIGRATION_LOCK_TIMEOUT_MS
 * (instead of queueing every writer of the table behind it), says so, runs again, and after
 * WRIT_MIGRATION_ATTEMPTS runs fails the start.
 */
describe('faults: a migration behind a long transaction', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    // Before TaskIdempotencyKeys: its ALTER TABLE tasks is pending.
    await sql(db.url, `DROP INDEX tasks_idempotency`);
    await sql(db.url, `ALTER TABLE tasks DROP COLUMN idempotency_key, DROP COLUMN request_digest`);
    await sql(db.url, `DELETE FROM writ_migrations WHERE name = 'TaskIdempotencyKeys1764580000000'`);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('gives up on its lock_timeout, warns, runs again, and fails the start after the last run', async () => {
    const password = process.env[SERVICE_LOGIN_ENV];
    if (!password || !db.serviceUrl) throw new Error('the global setup made no service login');
    const blocker = new Client({ connectionString: db.url });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE tasks IN ROW EXCLUSIVE MODE');
    const warnings: string[] = [];
    const logger = { warn: (_: unknown, message: string) => warnings.push(message), info: () => undefined } as unknown as Parameters<
      typeof connectAsServiceLogin
    >[6];
    try {
      const refused = await connectAsServiceLogin(
        db.url,
        { user: TEST_SERVICE_USER, password },
        db.serviceUrl,
        2,
        {},
        { allowNewerSchema: false, migrationLockTimeoutMs: 100, migrationAttempts: 2 },
        logger,
      ).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(StartupError);
      expect((refused as Error).message).toBe('database migration failed: canceling statement due to lock timeout');
      expect(warnings).toEqual([expect.stringMatching(/^database migration gave up waiting for a lock/)]);
    } finally {
      await blocker.query('ROLLBACK');
      await blocker.end();
    }
    // Once the long transaction is gone, the next start migrates.
    const { dataSource, pool, applied } = await connectAsServiceLogin(db.url, { user: TEST_SERVICE_USER, password }, db.serviceUrl, 2);
    await pool.end();
    await dataSource.destroy();
    expect(applied).toEqual(['TaskIdempotencyKeys1764580000000']);
  });
});
