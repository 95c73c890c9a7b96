import { masterKeyRewrapDone } from '@writ/accounts';
import { RowIntegrity, TASK_INTEGRITY_COLUMNS, taskIntegrityFieldsOf, type TaggedTable, type TaskIntegrityRow } from '@writ/grants';
import { MasterKey } from '@writ/keys';
import { createTestDatabase, type TestDatabase } from '@writ/testing';
import { Pool, type PoolClient } from 'pg';
import { eventually } from './support/eventually';
import { createTask, seedWorld, tasksToken, type World } from './support/grant-flow';
import { masterKeyEnv } from './support/master-key-instances';
import { sendJson } from './support/oauth-client';
import { startTestServices, type TestServices } from './support/test-services';

/** Tasks tagged under the previous key: twenty batches of a thousand. */
const TASKS = 20_000;
const KEY_A = Buffer.alloc(32, 31);
const KEY_B = Buffer.alloc(32, 32);

/** Key of the row tag lock (`libs/grants/src/row-integrity-backfill.ts`). */
const ROW_TAG_LOCK = 7_311_047;

/** Every tagged table, its key, and which of its rows carry a tag. */
const TABLES: Array<{ table: TaggedTable; key: string; only?: string }> = [
  { table: 'tasks', key: 'id' },
  { table: 'agents', key: 'id' },
  { table: 'orchestrators', key: 'id' },
  { table: 'admin_tokens', key: 'id' },
  { table: 'connectors', key: 'id' },
  { table: 'identity_providers', key: 'issuer' },
  { table: 'policies', key: 'version', only: 'active' },
  { table: 'approvals', key: 'id', only: `status IN ('approved', 'denied')` },
];

/**
 * The re-tag after a master key rotation over a large installation, on a real PostgreSQL: it
 * commits in batches, so that a task of a batch already re-tagged is ended while it goes on, and
 * a run that dies half-way is resumed by the next start, with exact counts in one event. A DBA's
 * transaction holding the last task (`FOR UPDATE`) stops the re-tag where the tests look at it,
 * without timing: what waits for what is read from `pg_blocking_pids`.
 */
describe('master key rotation: the re-tag of a large installation in batches', () => {
  let db: TestDatabase;
  let world: World;
  let dba: Pool;
  /** A task whose tag was copied from another: it verifies under no key, and is never re-tagged. */
  let forged: { id: string; tag: string };
  const open: TestServices[] = [];

  /** The instance that re-tags waits for the DBA's lock (held across several statements) without giving up. */
  const PATIENT = { WRIT_DB_LOCK_TIMEOUT_MS: '60000', WRIT_DB_STATEMENT_TIMEOUT_MS: '120000' };
  const start = async (env: Record<string, string>): Promise<TestServices> => {
    const services = await startTestServices({ db, env });
    open.push(services);
    return services;
  };
  const stop = async (services: TestServices): Promise<void> => {
    open.splice(open.indexOf(services), 1);
    await services.close();
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    const first = await start(masterKeyEnv(KEY_A));
    world = await seedWorld(first.runtime.pool);
    dba = new Pool({ connectionString: db.url, max: 4 });
    const template = await createTask(first, world.orchestrator);
    await dba.query(
      `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, task_token_jti, created_at, expires_at)
       SELECT gen_random_uuid(), agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, 'bulk-' || n, created_at, expires_at
         FROM tasks, generate_series(1, $2) AS n WHERE id = $1`,
      [template.task_id, TASKS],
    );
    // Tagged under A, as this release writes them.
    const underA = new RowIntegrity(new MasterKey(KEY_A));
    const rows = (await dba.query<TaskIntegrityRow>(`SELECT ${TASK_INTEGRITY_COLUMNS} FROM tasks WHERE integrity_tag IS NULL`)).rows;
    await dba.query(`UPDATE tasks t SET integrity_tag = n.tag FROM unnest($1::uuid[], $2::text[]) AS n(id, tag) WHERE t.id = n.id`, [
      rows.map((row) => row.id),
      rows.map((row) => underA.tagTask(taskIntegrityFieldsOf(row))),
    ]);
    // One task in the middle of the key order carries the tag of another: forged.
    const [a, b] = (await dba.query<{ id: string; integrity_tag: string }>('SELECT id, integrity_tag FROM tasks ORDER BY id OFFSET 10000 LIMIT 2')).rows;
    await dba.query('UPDATE tasks SET integrity_tag = $2 WHERE id = $1', [a.id, b.integrity_tag]);
    forged = { id: a.id, tag: b.integrity_tag };
    await stop(first);
    // The tags as written under A, restored before each test.
    for (const { table, key } of TABLES) await dba.query(`CREATE TABLE retag_saved_${table} AS SELECT ${key} AS key, integrity_tag FROM ${table}`);
  }, 180_000);
  afterAll(async () => {
    for (const services of open.splice(0)) await services.close().catch(() => undefined);
    await dba?.end();
    await db?.drop();
  });

  /** Every row back under A, as before the rotation; returns what the re-tag must count (the forged task left out). */
  async function underA(): Promise<Record<TaggedTable, number>> {
    const expected = {} as Record<TaggedTable, number>;
    for (const { table, key, only } of TABLES) {
      await dba.query(`UPDATE ${table} t SET integrity_tag = s.integrity_tag FROM retag_saved_${table} s WHERE t.${key} = s.key`);
      const { rows } = await dba.query<{ n: number }>(
        // Rows written since (a start's bootstrap admin token) are under B already: not counted.
        `SELECT count(*)::int AS n FROM ${table} WHERE ${key} IN (SELECT key FROM retag_saved_${table} WHERE integrity_tag IS NOT NULL)${only ? ` AND ${only}` : ''}${table === 'tasks' ? ' AND id <> $1' : ''}`,
        table === 'tasks' ? [forged.id] : [],
      );
      expected[table] = rows[0].n;
    }
    expect(expected.tasks).toBe(TASKS);
    return expected;
  }

  /** Holds the last task in key order locked, so that the re-tag stops at its last batch of tasks. */
  async function holdLastTask(): Promise<{ client: PoolClient; pid: number; release: () => Promise<void> }> {
    const client = await dba.connect();
    await client.query('BEGIN');
    await client.query('SELECT id FROM tasks ORDER BY id DESC LIMIT 1 FOR UPDATE');
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    let released = false;
    return {
      client,
      pid,
      release: async () => {
        if (released) return;
        released = true;
        await client.query('COMMIT');
        client.release();
      },
    };
  }

  /** The backends waiting for a lock, and who they wait for. */
  const waiting = async () =>
    (
      await dba.query<{ pid: number; blockers: number[]; query: string }>(
        `SELECT pid, pg_blocking_pids(pid) AS blockers, query FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0`,
      )
    ).rows;
  const tagLockHolder = async () =>
    (
      await dba.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND objsubid = 1 AND granted`, [ROW_TAG_LOCK])
    ).rows.map((row) => row.pid);
  /** The re-tag holds the row tag lock and waits for the DBA's task. */
  const retagWaitsFor = (holder: number) =>
    eventually(
      async () => ({ rows: await waiting(), tagging: await tagLockHolder() }),
      ({ rows, tagging }) => tagging.length === 1 && rows.some((row) => row.blockers.includes(holder)),
      60_000,
    );
  /** Tasks whose tag is not the one they had under A (re-tagged under B). */
  const retaggedTasks = async () =>
    (await dba.query<{ n: number }>('SELECT count(*)::int AS n FROM tasks t JOIN retag_saved_tasks s ON s.key = t.id WHERE t.integrity_tag <> s.integrity_tag'))
      .rows[0].n;
  const events = async () =>
    (
      await dba.query<{ data: { retagged: Record<TaggedTable, number>; stopped?: boolean } }>(
        `SELECT data FROM audit_events WHERE type = 'master_key.rewrapped' ORDER BY seq`,
      )
    ).rows;
  /** Every task verifies under B alone, but the forged one, left as it was. */
  async function allUnderB(): Promise<void> {
    const underB = new RowIntegrity(new MasterKey(KEY_B));
    const rows = (await dba.query<TaskIntegrityRow>(`SELECT ${TASK_INTEGRITY_COLUMNS}, integrity_tag FROM tasks ORDER BY id`)).rows;
    const bad = rows.filter((row) => !underB.verifyTask(taskIntegrityFieldsOf(row), row.integrity_tag)).map((row) => row.id);
    expect(bad).toEqual([forged.id]);
    expect((await dba.query('SELECT integrity_tag FROM tasks WHERE id = $1', [forged.id])).rows).toEqual([{ integrity_tag: forged.tag }]);
  }
  const retagMetric = async (services: TestServices, table: string) => {
    const { body } = await services.runtime.metrics.render();
    return Number(new RegExp(`^writ_master_key_rewrap_rows\\{table="${table}",outcome="retagged"\\} (\\d+)$`, 'm').exec(body)?.[1] ?? 0);
  };

  it('frees each batch of tasks when it commits: a task already re-tagged is ended while the re-tag waits', async () => {
    const expected = await underA();
    const eventsBefore = (await events()).length;
    const holder = await holdLastTask();
    let rotating: TestServices | undefined;
    try {
      rotating = await start({ ...masterKeyEnv(KEY_B, [KEY_A]), ...PATIENT });
      const [tagger] = (await retagWaitsFor(holder.pid)).tagging;
      // A second instance (the default 3 s lock_timeout) serves meanwhile; the re-seal is the other's (busy).
      const serving = await start(masterKeyEnv(KEY_B, [KEY_A]));
      expect(await masterKeyRewrapDone(serving.runtime)).toBe('busy');
      // The first task in key order, in the first batch: ending it completes (were it still locked by the re-tag, a 503)...
      const [firstTask] = (await dba.query<{ id: string }>('SELECT id FROM tasks ORDER BY id LIMIT 1')).rows;
      const bearer = await tasksToken(serving, world.orchestrator);
      const ended = await sendJson('POST', `${serving.issuer}/v1/tasks/${firstTask.id}/complete`, undefined, bearer);
      expect(ended.status).toBe(200);
      expect((await dba.query('SELECT status FROM tasks WHERE id = $1', [firstTask.id])).rows).toEqual([{ status: 'completed' }]);
      // ...while the re-tag still waits for the DBA, and nobody waits for the re-tag.
      const now = await waiting();
      expect(now.filter((row) => row.blockers.includes(holder.pid)).map((row) => row.pid)).toEqual([tagger]);
      expect(now.filter((row) => row.blockers.includes(tagger))).toEqual([]);
      // The batches before the DBA's task are committed, and counted in the metric as they go.
      const done = await retaggedTasks();
      expect(done).toBeGreaterThanOrEqual(TASKS - 1_001);
      expect(await retagMetric(rotating, 'tasks')).toBe(done);
      expect(await events()).toHaveLength(eventsBefore);
      await stop(serving);
    } finally {
      await holder.release();
    }
    const report = await masterKeyRewrapDone(rotating.runtime);
    expect(report).toMatchObject({ retagged: expected });
    const recorded = await events();
    expect(recorded).toHaveLength(eventsBefore + 1);
    expect(recorded[recorded.length - 1].data.retagged).toEqual(expected);
    expect(await retagMetric(rotating, 'tasks')).toBe(expected.tasks);
    expect((await dba.query('SELECT * FROM master_key_retag_progress')).rows).toEqual([]);
    await allUnderB();
    await stop(rotating);
  }, 240_000);

  it('resumes after a run that died half-way: the committed batches stay, the next start re-tags the rest, exact counts in one event', async () => {
    const expected = await underA();
    const eventsBefore = (await events()).length;
    const holder = await holdLastTask();
    let dying: TestServices | undefined;
    let done: number;
    try {
      dying = await start({ ...masterKeyEnv(KEY_B, [KEY_A]), ...PATIENT });
      const [tagger] = (await retagWaitsFor(holder.pid)).tagging;
      // The re-tag dies: the connection that holds the lock and runs the batches.
      await dba.query('SELECT pg_terminate_backend($1)', [tagger]);
      expect(await masterKeyRewrapDone(dying.runtime)).toBeUndefined();
      done = await retaggedTasks();
    } finally {
      await holder.release();
    }
    // Half-way: the committed batches are re-tagged and counted, nothing more; no event.
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThan(expected.tasks);
    expect((await dba.query('SELECT tagged_table, retagged::int AS retagged FROM master_key_retag_progress')).rows).toEqual([
      { tagged_table: 'tasks', retagged: done },
    ]);
    expect(await events()).toHaveLength(eventsBefore);
    await stop(dying);
    const resumed = await start(masterKeyEnv(KEY_B, [KEY_A]));
    const report = await masterKeyRewrapDone(resumed.runtime);
    // Counts over both runs, each row once.
    expect(report).toMatchObject({ retagged: expected });
    const recorded = await events();
    expect(recorded).toHaveLength(eventsBefore + 1);
    expect(recorded[recorded.length - 1].data.retagged).toEqual(expected);
    expect(await retagMetric(resumed, 'tasks')).toBe(expected.tasks);
    expect((await dba.query('SELECT * FROM master_key_retag_progress')).rows).toEqual([]);
    await allUnderB();
    await stop(resumed);
    // Done: a later start re-tags nothing and records nothing.
    const later = await start(masterKeyEnv(KEY_B, [KEY_A]));
    await masterKeyRewrapDone(later.runtime);
    expect(await events()).toHaveLength(eventsBefore + 1);
    await stop(later);
  }, 240_000);

  it('stops between two batches at a shutdown: the event says stopped with what was committed, the next start re-tags the rest', async () => {
    const expected = await underA();
    const eventsBefore = (await events()).length;
    const holder = await holdLastTask();
    const stopping = await start({ ...masterKeyEnv(KEY_B, [KEY_A]), ...PATIENT });
    let closed: Promise<void>;
    try {
      await retagWaitsFor(holder.pid);
      // The shutdown waits for the batch under way (held by the DBA), then stops before the next one.
      closed = stop(stopping);
    } finally {
      await holder.release();
    }
    await closed;
    const recorded = await events();
    expect(recorded).toHaveLength(eventsBefore + 1);
    const first = recorded[recorded.length - 1].data;
    expect(first.stopped).toBe(true);
    expect(first.retagged.tasks).toBe(await retaggedTasks());
    expect(first.retagged.tasks).toBeGreaterThan(0);
    expect((await dba.query('SELECT * FROM master_key_retag_progress')).rows).toEqual([]);
    const resumed = await start(masterKeyEnv(KEY_B, [KEY_A]));
    await masterKeyRewrapDone(resumed.runtime);
    const all = await events();
    expect(all).toHaveLength(eventsBefore + 2);
    const second = all[all.length - 1].data;
    expect(second.stopped).toBeUndefined();
    // Each row in one event: the two add up to every row under A.
    const sum = Object.fromEntries(TABLES.map(({ table }) => [table, first.retagged[table] + second.retagged[table]]));
    expect(sum).toEqual(expected);
    await allUnderB();
    await stop(resumed);
  }, 240_000);
});
