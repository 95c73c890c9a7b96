import { Client } from 'pg';
import type { DataSource } from 'typeorm';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { createDataSource, migrate, MigrateOptions, MIGRATION_LOCK, MigrationOutcome } from '../libs/database/src/data-source';

/**
 * Migrations on `tasks` and `approvals` (millions of rows, writes all the time) during a rolling
 * upgrade: old instances keep declaring, ending and approving while a new one migrates. Each test
 * puts a long transaction in front of the migration (a writer that has not committed) so that the
 * migration is caught mid-way, deterministically, and then checks, with `pg_blocking_pids`, that
 * the writes sent meanwhile are never queued behind it.
 */

const LIST_ORDER = 'ListOrderIndexes1764620000000';
const TASK_KEYS = 'TaskIdempotencyKeys1764580000000';
const ROW_INTEGRITY = 'RowIntegrity1764590000000';
const CONNECTOR_INTEGRITY = 'ConnectorIntegrity1764600000000';

/** The list-order indexes as the migration leaves them: name → key columns (and predicate). */
const LIST_ORDER_INDEXES: Record<string, string> = {
  tasks_created: 'tasks USING btree (created_at, id)',
  tasks_status: 'tasks USING btree (status, created_at, id)',
  tasks_agent: 'tasks USING btree (agent_id, created_at, id)',
  tasks_orchestrator: 'tasks USING btree (orchestrator_id, created_at, id)',
  approvals_requested: 'approvals USING btree (requested_at, id)',
  approvals_task: 'approvals USING btree (task_id, requested_at, id)',
  approvals_pending: `approvals USING btree (requested_at, id) WHERE (status = 'pending'::text)`,
};

async function connect(url: string, applicationName: string): Promise<Client> {
  const client = new Client({ connectionString: url, application_name: applicationName });
  await client.connect();
  return client;
}

/** The schema as it was before the list-order migration (as the earlier migrations left it), the migration not recorded. */
async function beforeListOrder(db: Client): Promise<void> {
  await db.query(`DROP INDEX tasks_created, tasks_status, approvals_requested, tasks_agent, tasks_orchestrator, approvals_task, approvals_pending`);
  await db.query(`CREATE INDEX tasks_agent ON tasks (agent_id, created_at)`);
  await db.query(`CREATE INDEX tasks_orchestrator ON tasks (orchestrator_id, created_at)`);
  await db.query(`CREATE INDEX approvals_task ON approvals (task_id)`);
  await db.query(`CREATE INDEX approvals_pending ON approvals (requested_at) WHERE status = 'pending'`);
  await db.query(`DELETE FROM writ_migrations WHERE name = $1`, [LIST_ORDER]);
}

/** The schema as it was before the task idempotency keys, the migration not recorded. */
async function beforeTaskKeys(db: Client): Promise<void> {
  await db.query(`DROP INDEX tasks_idempotency`);
  await db.query(`ALTER TABLE tasks DROP COLUMN idempotency_key, DROP COLUMN request_digest`);
  await db.query(`DELETE FROM writ_migrations WHERE name = $1`, [TASK_KEYS]);
}

/** The schema as it was before the row integrity tags, the migration not recorded. */
async function beforeRowIntegrity(db: Client): Promise<void> {
  await db.query(`DROP TABLE row_integrity_backfill`);
  for (const table of ['tasks', 'agents', 'orchestrators', 'admin_tokens']) await db.query(`ALTER TABLE ${table} DROP COLUMN integrity_tag`);
  await db.query(`DELETE FROM writ_migrations WHERE name = $1`, [ROW_INTEGRITY]);
}

/** Some tasks and approvals, so that a build has rows to read. */
async function seed(db: Client): Promise<void> {
  await db.query(
    `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, status, task_token_jti, expires_at)
     SELECT gen_random_uuid(), 'agent-' || (n % 50), 'orch-' || (n % 10), 'seeded', '[]', 'active', 'seed-' || n, now() + interval '1 hour'
       FROM generate_series(1, 5000) AS n`,
  );
  await db.query(
    `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, expires_at)
     SELECT gen_random_uuid(), id, agent_id, 'payments', '[]', '[]', 'v1', 'pending', now() + interval '1 hour' FROM tasks LIMIT 2000`,
  );
}

/** A writer of an old instance: declares a task, ends one, asks for an approval. */
async function writeOnce(writer: Client, n: number): Promise<void> {
  const { rows } = await writer.query<{ id: string }>(
    `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, status, task_token_jti, expires_at)
     VALUES (gen_random_uuid(), 'agent-w', 'orch-w', 'during the migration', '[]', 'active', 'during-' || $1::text || '-' || gen_random_uuid(), now() + interval '1 hour')
     RETURNING id`,
    [n],
  );
  await writer.query(`UPDATE tasks SET status = 'completed', ended_at = now() WHERE id = $1`, [rows[0].id]);
  await writer.query(
    `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, expires_at)
     VALUES (gen_random_uuid(), $1, 'agent-w', 'payments', '[]', '[]', 'v1', 'pending', now() + interval '1 hour')`,
    [rows[0].id],
  );
}

/** Polls until `check` holds (each poll a query: no wall-clock assertion). */
async function until(check: () => Promise<boolean>, what: string, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The backend of the session named `applicationName`, once it waits on a heavyweight lock in a statement matching `query`. */
async function waitingIn(monitor: Client, applicationName: string, query: RegExp): Promise<number> {
  let pid = 0;
  await until(async () => {
    const { rows } = await monitor.query<{ pid: number; query: string; wait_event_type: string | null }>(
      `SELECT pid, query, wait_event_type FROM pg_stat_activity WHERE application_name = $1`,
      [applicationName],
    );
    const row = rows.find((r) => r.wait_event_type === 'Lock' && query.test(r.query));
    pid = row?.pid ?? 0;
    return Boolean(row);
  }, `${applicationName} waiting on a lock in ${query}`);
  return pid;
}

/**
 * Runs `write` on `writer` while sampling `pg_blocking_pids` of its backend: `blocked` is what
 * blocked it (pids), if anything ever did.
 */
async function watched(monitor: Client, writer: Client, write: () => Promise<void>): Promise<{ blocked: number[] }> {
  const pid = (await writer.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  let done = false;
  const blocked = new Set<number>();
  const running = write().finally(() => (done = true));
  // Left waiting when it was blocked (the caller ends what blocks it): its outcome is not the point then.
  running.catch(() => undefined);
  while (!done) {
    const { rows } = await monitor.query<{ blockers: number[] }>('SELECT pg_blocking_pids($1) AS blockers', [pid]);
    for (const blocker of rows[0].blockers) blocked.add(blocker);
    // A writer queued behind the migration would wait for the long transaction: stop here, the caller ends it.
    if (blocked.size > 0) break;
  }
  return { blocked: [...blocked], ...(blocked.size > 0 ? {} : await running.then(() => ({}))) };
}

async function indexDefinitions(db: Client): Promise<Record<string, { definition: string; valid: boolean }>> {
  const { rows } = await db.query<{ name: string; definition: string; valid: boolean }>(
    `SELECT c.relname AS name, regexp_replace(pg_get_indexdef(c.oid), '^.* ON (public\\.)?', '') AS definition, i.indisvalid AS valid
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
      WHERE t.relname IN ('tasks', 'approvals')`,
  );
  return Object.fromEntries(rows.map((row) => [row.name, { definition: row.definition, valid: row.valid }]));
}

async function expectListOrderIndexes(db: Client): Promise<void> {
  const indexes = await indexDefinitions(db);
  for (const [name, definition] of Object.entries(LIST_ORDER_INDEXES)) expect([name, indexes[name]]).toEqual([name, { definition, valid: true }]);
  expect(Object.entries(indexes).filter(([name, index]) => !index.valid || name.endsWith('_next'))).toEqual([]);
}

describe('migrations on hot tables: writes go on while they run', () => {
  let db: TestDatabase;
  let admin: Client;
  let monitor: Client;
  const sources: DataSource[] = [];
  const clients: Client[] = [];

  async function dataSource(applicationName: string): Promise<DataSource> {
    const source = createDataSource(db.url, { poolSize: 1, applicationName });
    await source.initialize();
    sources.push(source);
    return source;
  }

  async function client(applicationName: string): Promise<Client> {
    const c = await connect(db.url, applicationName);
    clients.push(c);
    return c;
  }

  /** A long transaction of an old instance: a task write not yet committed (ROW EXCLUSIVE on `tasks` and `approvals`). */
  async function longTransaction(): Promise<Client> {
    const blocker = await client('long-transaction');
    await blocker.query('BEGIN');
    await blocker.query(`UPDATE tasks SET refusals = refusals WHERE id = (SELECT id FROM tasks ORDER BY id LIMIT 1)`);
    await blocker.query(`UPDATE approvals SET note = note WHERE id = (SELECT id FROM approvals ORDER BY id LIMIT 1)`);
    return blocker;
  }

  beforeEach(async () => {
    db = await createTestDatabase();
    admin = await connect(db.url, 'test-admin');
    monitor = await connect(db.url, 'test-monitor');
    await seed(admin);
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.end().catch(() => undefined);
    for (const source of sources.splice(0)) if (source.isInitialized) await source.destroy().catch(() => undefined);
    await admin.end();
    await monitor.end();
    await db.drop();
  });

  it('builds and replaces the list-order indexes while tasks are declared, ended and approved', async () => {
    await beforeListOrder(admin);
    const blocker = await longTransaction();
    const retries: unknown[] = [];
    // A lock_timeout far below how long the build waits here: the concurrent builds are not bound by it.
    const options: MigrateOptions = { lockTimeoutMs: 100, attempts: 1, onRetry: (error) => retries.push(error) };
    let finished = false;
    const migrating = migrate(await dataSource('writ-migrate-a'), options).finally(() => (finished = true));
    migrating.catch(() => undefined);
    await waitingIn(monitor, 'writ-migrate-a', /CREATE INDEX/);

    // Old instances write meanwhile: none of it waits for the migration.
    const writer = await client('old-instance');
    const during = await watched(monitor, writer, () => writeOnce(writer, 1));
    const stillMigrating = !finished;
    // Longer than the migration's lock_timeout, still waiting: it was not cut by it.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const waitedPastTimeout = !finished;
    await blocker.query('COMMIT');
    expect({ blocked: during.blocked, stillMigrating, waitedPastTimeout }).toEqual({ blocked: [], stillMigrating: true, waitedPastTimeout: true });

    // And while the rest of it runs (the replaced indexes dropped, the new ones renamed).
    const blockedLater = new Set<number>();
    let n = 2;
    while (!finished) {
      const { blocked } = await watched(monitor, writer, () => writeOnce(writer, n++));
      blocked.forEach((pid) => blockedLater.add(pid));
    }
    expect(await migrating).toEqual({ applied: [LIST_ORDER], unknown: [] });
    expect([...blockedLater]).toEqual([]);
    expect(retries).toEqual([]);
    await expectListOrderIndexes(admin);
  });

  it('gives up a schema change waiting behind a long transaction (lock_timeout) and tries again, so writers are not queued behind it', async () => {
    await beforeTaskKeys(admin);
    const blocker = await longTransaction();
    const retries: string[] = [];
    const options: MigrateOptions = {
      lockTimeoutMs: 200,
      attempts: 1_000,
      retryDelayMs: 20,
      onRetry: (error) => retries.push((error as { driverError?: { code?: string } }).driverError?.code ?? String(error)),
    };
    let finished = false;
    const migrating = migrate(await dataSource('writ-migrate-a'), options).finally(() => (finished = true));
    migrating.catch(() => undefined);
    await waitingIn(monitor, 'writ-migrate-a', /ALTER TABLE tasks/);

    // A declaration sent now is queued behind the ALTER TABLE, until it gives up on its lock.
    const writer = await client('old-instance');
    let written = false;
    const writing = writeOnce(writer, 1).then(() => (written = true));
    writing.catch(() => undefined);
    await until(async () => written || retries.length > 0, 'the declaration, or the migration giving up');
    await until(async () => written, 'the declaration, with the long transaction still open');
    const stillMigrating = !finished;
    await blocker.query('COMMIT');
    expect(await migrating).toEqual({ applied: [TASK_KEYS], unknown: [] });
    expect(stillMigrating).toBe(true);
    expect(retries.length).toBeGreaterThan(0);
    expect(new Set(retries)).toEqual(new Set(['55P03']));
    const indexes = await indexDefinitions(admin);
    expect(indexes.tasks_idempotency).toEqual({
      definition: 'tasks USING btree (orchestrator_id, idempotency_key) WHERE (idempotency_key IS NOT NULL)',
      valid: true,
    });
  });

  it('adds the integrity columns one table at a time: a long transaction on agents does not stop tasks being written', async () => {
    await beforeRowIntegrity(admin);
    // An old instance's transaction that wrote to agents and has not committed.
    const blocker = await client('long-transaction');
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE agents IN ROW EXCLUSIVE MODE');
    const options: MigrateOptions = { lockTimeoutMs: 300, attempts: 1_000, retryDelayMs: 20 };
    const migrating = migrate(await dataSource('writ-migrate-a'), options);
    migrating.catch(() => undefined);
    await waitingIn(monitor, 'writ-migrate-a', /ALTER TABLE agents/);

    const writer = await client('old-instance');
    const during = await watched(monitor, writer, () => writeOnce(writer, 1));
    await blocker.query('COMMIT');
    expect(during.blocked).toEqual([]);
    expect(await migrating).toEqual({ applied: [ROW_INTEGRITY], unknown: [] });
    // The tables RowIntegrity tags (later migrations, left applied, tag others).
    const { rows } = await admin.query(
      `SELECT table_name FROM information_schema.columns
        WHERE column_name = 'integrity_tag' AND table_name = ANY($1::text[]) ORDER BY table_name`,
      [['admin_tokens', 'agents', 'orchestrators', 'tasks']],
    );
    expect(rows.map((row: { table_name: string }) => row.table_name)).toEqual(['admin_tokens', 'agents', 'orchestrators', 'tasks']);
  });

  it('tags connectors one committed statement at a time: a long transaction on the backfill marker does not stop connectors being read', async () => {
    await admin.query(`ALTER TABLE row_integrity_backfill DROP COLUMN connectors_tagged`);
    await admin.query(`ALTER TABLE connectors DROP COLUMN integrity_tag`);
    await admin.query(`DELETE FROM writ_migrations WHERE name = $1`, [CONNECTOR_INTEGRITY]);
    // The previous release's first-start tagging: one transaction that read the marker and has not committed.
    const blocker = await client('long-transaction');
    await blocker.query('BEGIN');
    await blocker.query('SELECT * FROM row_integrity_backfill');
    const migrating = migrate(await dataSource('writ-migrate-a'), { lockTimeoutMs: 300, attempts: 1_000, retryDelayMs: 20 });
    migrating.catch(() => undefined);
    await waitingIn(monitor, 'writ-migrate-a', /ALTER TABLE row_integrity_backfill/);

    const reader = await client('old-instance');
    const during = await watched(monitor, reader, async () => {
      await reader.query('SELECT count(*) FROM connectors');
    });
    await blocker.query('COMMIT');
    expect(during.blocked).toEqual([]);
    expect(await migrating).toEqual({ applied: [CONNECTOR_INTEGRITY], unknown: [] });
  });

  it('a build cancelled half-way (an INVALID index left behind) is cleaned up and completed by the next start', async () => {
    await beforeListOrder(admin);
    const blocker = await longTransaction();
    const first = migrate(await dataSource('writ-migrate-a'), { attempts: 1 });
    first.catch(() => undefined);
    const pid = await waitingIn(monitor, 'writ-migrate-a', /CREATE INDEX CONCURRENTLY/);
    await monitor.query('SELECT pg_cancel_backend($1)', [pid]);
    await expect(first).rejects.toMatchObject({ driverError: { code: '57014' } });
    await blocker.query('COMMIT');
    const invalid = Object.entries(await indexDefinitions(admin)).filter(([, index]) => !index.valid);
    expect(invalid.map(([name]) => name)).toEqual(['tasks_created']);

    expect(await migrate(await dataSource('writ-migrate-b'))).toEqual({ applied: [LIST_ORDER], unknown: [] });
    await expectListOrderIndexes(admin);
  });

  it('completes a replacement interrupted between its steps, and rebuilds nothing already done', async () => {
    await beforeListOrder(admin);
    // Interrupted after tasks_agent's replacement was built, before the old one was dropped; and
    // approvals_task's old index already dropped, its replacement not yet renamed.
    await admin.query(`CREATE INDEX tasks_agent_next ON tasks (agent_id, created_at, id)`);
    await admin.query(`CREATE INDEX approvals_task_next ON approvals (task_id, requested_at, id)`);
    await admin.query(`DROP INDEX approvals_task`);
    expect(await migrate(await dataSource('writ-migrate-a'))).toEqual({ applied: [LIST_ORDER], unknown: [] });
    await expectListOrderIndexes(admin);

    // Interrupted after its last step, before it was recorded: run again, it builds nothing.
    const oids = async () =>
      (await admin.query<{ relname: string; oid: number }>(`SELECT relname, oid FROM pg_class WHERE relname = ANY($1)`, [Object.keys(LIST_ORDER_INDEXES)]))
        .rows;
    const before = await oids();
    await admin.query(`DELETE FROM writ_migrations WHERE name = $1`, [LIST_ORDER]);
    expect(await migrate(await dataSource('writ-migrate-b'))).toEqual({ applied: [LIST_ORDER], unknown: [] });
    expect(await oids()).toEqual(before);
  });

  it('two instances starting together: one builds the indexes, the other waits for it, neither fails', async () => {
    await beforeListOrder(admin);
    const blocker = await longTransaction();
    const retries: unknown[] = [];
    const options: MigrateOptions = { attempts: 1, onRetry: (error) => retries.push(error) };
    const first = migrate(await dataSource('writ-migrate-a'), options);
    first.catch(() => undefined);
    await waitingIn(monitor, 'writ-migrate-a', /CREATE INDEX/);
    // The second instance starts while the first builds, and waits for the migration lock.
    const second = migrate(await dataSource('writ-migrate-b'), options);
    second.catch(() => undefined);
    await until(async () => {
      const { rows } = await monitor.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'writ-migrate-b' AND query ILIKE '%advisory_lock%'`);
      return rows.length > 0;
    }, 'the second instance asking for the migration lock');
    await blocker.query('COMMIT');
    const outcomes: MigrationOutcome[] = await Promise.all([first, second]);
    expect(outcomes).toEqual([
      { applied: [LIST_ORDER], unknown: [] },
      { applied: [], unknown: [] },
    ]);
    expect(retries).toEqual([]);
    await expectListOrderIndexes(admin);
  });

  it('an instance of the previous release starting during the build: a deadlock ends its start or one run of the build, never the upgrade', async () => {
    await beforeListOrder(admin);
    const blocker = await longTransaction();
    const retries: string[] = [];
    const options: MigrateOptions = {
      attempts: 5,
      retryDelayMs: 20,
      onRetry: (error) => retries.push((error as { driverError?: { code?: string } }).driverError?.code ?? String(error)),
    };
    const migrating = migrate(await dataSource('writ-migrate-a'), options);
    migrating.catch(() => undefined);
    await waitingIn(monitor, 'writ-migrate-a', /CREATE INDEX/);
    // The previous release's start: a blocking pg_advisory_lock, a statement holding a snapshot the build then waits for.
    const old = await client('writ-migrate-old');
    const oldStart = old.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]).then(() => old.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]));
    await waitingIn(monitor, 'writ-migrate-old', /pg_advisory_lock/);
    await blocker.query('COMMIT');
    // PostgreSQL breaks the cycle by ending one of the two: the old instance's start (its
    // supervisor starts it again), or the build, which is then run again.
    const oldOutcome = await oldStart.then(
      () => 'started',
      (error: { code?: string }) => error.code,
    );
    expect(await migrating).toEqual({ applied: [LIST_ORDER], unknown: [] });
    expect(['started', '40P01']).toContain(oldOutcome);
    expect(retries.filter((code) => code !== '40P01')).toEqual([]);
    await expectListOrderIndexes(admin);
  });
});
