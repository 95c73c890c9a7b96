import { Pool, type PoolClient } from 'pg';
import type { TaggedTable } from '@writ/grants';
import { eventually } from './support/eventually';
import { createTask, seedWorld, tasksToken, type World } from './support/grant-flow';
import { sendJson } from './support/oauth-client';
import { startSecondInstance, startTestServices, type TestServices } from './support/test-services';

/** Legacy tasks tagged by the upgrade: twenty batches of a thousand. */
const LEGACY_TASKS = 20_000;

/** Key of the row tag lock (`libs/grants/src/row-integrity-backfill.ts`). */
const ROW_TAG_LOCK = 7_311_047;

/**
 * The upgrade's tagging of a large installation, on a real PostgreSQL: it commits in batches, so
 * that the rows of a batch already done are free for requests while it goes on, a start that
 * dies half-way is resumed by the next one, and two instances starting at once do not both run it.
 * A DBA's transaction holding the last task (`FOR UPDATE`) stops the tagging where the tests look
 * at it, without timing: what waits for what is read from `pg_blocking_pids`.
 */
describe('row integrity: the upgrade tags a large installation in batches', () => {
  let first: TestServices;
  let world: World;
  let dba: Pool;
  let expected: Record<TaggedTable, number>;

  /** Instances that run the tagging wait for the DBA's lock (held across several statements) without giving up. */
  const PATIENT = { env: { WRIT_DB_LOCK_TIMEOUT_MS: '60000', WRIT_DB_STATEMENT_TIMEOUT_MS: '120000' } };

  beforeAll(async () => {
    first = await startTestServices();
    world = await seedWorld(first.runtime.pool);
    dba = new Pool({ connectionString: first.db.url, max: 4 });
    const template = await createTask(first, world.orchestrator);
    // Tasks as the previous release wrote them: no tag.
    await dba.query(
      `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, task_token_jti, created_at, expires_at)
       SELECT gen_random_uuid(), agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, 'legacy-' || n, created_at, expires_at
         FROM tasks, generate_series(1, $2) AS n WHERE id = $1`,
      [template.task_id, LEGACY_TASKS],
    );
  }, 120_000);
  afterAll(async () => {
    await dba.end();
    await first.close();
  });

  /**
   * As before the upgrade: every row untagged but those of `keep` (as if written by this release
   * meanwhile), no marker; returns what the tagging must count.
   */
  async function beforeTheUpgrade(keep: TaggedTable[] = []): Promise<Record<TaggedTable, number>> {
    const tables: TaggedTable[] = ['tasks', 'agents', 'orchestrators', 'admin_tokens', 'connectors', 'identity_providers', 'policies', 'approvals'];
    for (const table of tables.filter((table) => !keep.includes(table))) await dba.query(`UPDATE ${table} SET integrity_tag = NULL`);
    await dba.query('DELETE FROM row_integrity_backfill');
    const count = async (sql: string) => (await dba.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql} WHERE integrity_tag IS NULL`)).rows[0].n;
    return {
      tasks: await count('tasks'),
      agents: await count('agents'),
      orchestrators: await count('orchestrators'),
      admin_tokens: await count('admin_tokens'),
      connectors: await count('connectors'),
      identity_providers: await count('identity_providers'),
      policies: await count('(SELECT * FROM policies WHERE active) AS p'),
      approvals: await count(`(SELECT * FROM approvals WHERE status IN ('approved', 'denied')) AS a`),
    };
  }

  /** Holds the last task in key order locked, so that the tagging stops at its last batch of tasks. */
  async function holdLastTask(): Promise<{ client: PoolClient; pid: number; release: () => Promise<void> }> {
    const client = await dba.connect();
    await client.query('BEGIN');
    await client.query('SELECT id FROM tasks ORDER BY id DESC LIMIT 1 FOR UPDATE');
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    return {
      client,
      pid,
      release: async () => {
        await client.query('COMMIT');
        client.release();
      },
    };
  }

  /** The backends waiting for a lock, and who they wait for. */
  const waiting = async () =>
    (
      await dba.query<{ pid: number; blockers: number[]; query: string; since: string }>(
        `SELECT pid, pg_blocking_pids(pid) AS blockers, query, query_start::text AS since FROM pg_stat_activity WHERE cardinality(pg_blocking_pids(pid)) > 0`,
      )
    ).rows;
  const tagLockHolder = async () =>
    (
      await dba.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND objsubid = 1 AND granted`, [ROW_TAG_LOCK])
    ).rows.map((row) => row.pid);
  const taggedTasks = async () => (await dba.query<{ n: number }>('SELECT count(*)::int AS n FROM tasks WHERE integrity_tag IS NOT NULL')).rows[0].n;
  const events = async () =>
    (await dba.query<{ data: { tagged: Record<TaggedTable, number> } }>(`SELECT data FROM audit_events WHERE type = 'row_integrity.backfilled' ORDER BY seq`))
      .rows;
  const untagged = async () =>
    (
      await dba.query<{ n: number }>(
        `SELECT ((SELECT count(*) FROM tasks WHERE integrity_tag IS NULL) + (SELECT count(*) FROM agents WHERE integrity_tag IS NULL)
              + (SELECT count(*) FROM orchestrators WHERE integrity_tag IS NULL) + (SELECT count(*) FROM admin_tokens WHERE integrity_tag IS NULL)
              + (SELECT count(*) FROM connectors WHERE integrity_tag IS NULL))::int AS n`,
      )
    ).rows[0].n;

  it('frees each batch of tasks when it commits: a task of a tagged batch is ended while the tagging waits; of two starts at once one tags', async () => {
    const bearer = await tasksToken(first, world.orchestrator);
    // The orchestrators as saved again by this release (the Tasks API authenticates the one ending the task): tagged, left as they are.
    const orchestrators = (await dba.query('SELECT id, integrity_tag FROM orchestrators ORDER BY id')).rows;
    expected = await beforeTheUpgrade(['orchestrators']);
    expect(expected.orchestrators).toBe(0);
    const eventsBefore = (await events()).length;
    const holder = await holdLastTask();
    let starts: Promise<TestServices[]> | undefined;
    let failed = false;
    try {
      starts = Promise.all([startSecondInstance(first, PATIENT), startSecondInstance(first, PATIENT)]);
      // One instance tags, and waits for the DBA at the last task; the other waits for the row tag lock.
      const stopped = await eventually(
        async () => ({ waiting: await waiting(), tagging: await tagLockHolder() }),
        ({ waiting: rows, tagging }) =>
          rows.some((row) => row.blockers.includes(holder.pid)) && tagging.length === 1 && rows.some((row) => row.blockers.includes(tagging[0])),
        60_000,
      );
      const [tagger] = stopped.tagging;
      expect(stopped.tagging).toHaveLength(1);
      expect(stopped.waiting.filter((row) => row.blockers.includes(holder.pid))).toHaveLength(1);
      const waiter = stopped.waiting.filter((row) => row.blockers.includes(tagger));
      expect(waiter).toHaveLength(1);
      expect(waiter[0].query).toMatch(/pg_advisory_lock/);
      // The first task in key order, in the first batch: ending it completes (on an instance whose
      // lock_timeout is the default 3 s: were it still locked by the tagging, a 503)...
      const [firstTask] = (await dba.query<{ id: string }>('SELECT id FROM tasks ORDER BY id LIMIT 1')).rows;
      const ended = await sendJson('POST', `${first.issuer}/v1/tasks/${firstTask.id}/complete`, undefined, bearer);
      expect(ended.status).toBe(200);
      // ...before the tagging does: it still waits for the DBA, the marker is not written, no event.
      const after = await waiting();
      expect(after.filter((row) => row.blockers.includes(holder.pid))).toHaveLength(1);
      // The batches before the DBA's task are committed: tagged (the first task too, before it was ended).
      expect(await taggedTasks()).toBeGreaterThanOrEqual(LEGACY_TASKS - 1_000);
      expect((await dba.query('SELECT 1 FROM row_integrity_backfill')).rows).toEqual([]);
      expect(await events()).toHaveLength(eventsBefore);
      expect((await dba.query<{ status: string }>('SELECT status FROM tasks WHERE id = $1', [firstTask.id])).rows).toEqual([{ status: 'completed' }]);
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      await holder.release();
      // Started instances are closed however the test ended.
      if (failed) await starts?.then((instances) => Promise.all(instances.map((instance) => instance.close()))).catch(() => undefined);
    }
    const instances = await starts;
    try {
      const recorded = await events();
      expect(recorded).toHaveLength(eventsBefore + 1);
      expect(recorded[recorded.length - 1].data).toEqual({ tagged: expected });
      expect(await untagged()).toBe(0);
      expect((await dba.query('SELECT * FROM row_integrity_backfill_progress')).rows).toEqual([]);
      expect((await dba.query('SELECT id, integrity_tag FROM orchestrators ORDER BY id')).rows).toEqual(orchestrators);
    } finally {
      await Promise.all(instances.map((instance) => instance.close()));
    }
  }, 180_000);

  it('resumes after a start that died half-way: the committed batches stay, the next start tags the rest, one event with exact counts', async () => {
    expected = await beforeTheUpgrade();
    const eventsBefore = (await events()).length;
    const holder = await holdLastTask();
    let dying: Promise<TestServices> | undefined;
    let tagged: number;
    let failed = false;
    try {
      dying = startSecondInstance(first, PATIENT);
      const stopped = await eventually(
        async () => ({ waiting: await waiting(), tagging: await tagLockHolder() }),
        ({ waiting: rows, tagging }) => rows.some((row) => row.blockers.includes(holder.pid)) && tagging.length === 1,
        60_000,
      );
      const batch = stopped.waiting.find((row) => row.blockers.includes(holder.pid));
      // The instance's tagging dies: its lock session and the connection of the batch waiting.
      for (const pid of [stopped.tagging[0], batch!.pid]) await dba.query('SELECT pg_terminate_backend($1)', [pid]);
      tagged = await taggedTasks();
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      await holder.release();
      if (failed) await dying?.then((instance) => instance.close()).catch(() => undefined);
    }
    const died = await dying;
    try {
      // Half-way: the batches committed before are tagged and counted, nothing more; no marker, no event.
      expect(tagged).toBeGreaterThan(0);
      expect(tagged).toBeLessThan(expected.tasks);
      expect(await taggedTasks()).toBe(tagged);
      expect((await dba.query('SELECT tagged_table, tagged::int AS tagged FROM row_integrity_backfill_progress')).rows).toEqual([
        { tagged_table: 'tasks', tagged },
      ]);
      expect((await dba.query('SELECT 1 FROM row_integrity_backfill')).rows).toEqual([]);
      expect(await events()).toHaveLength(eventsBefore);
    } finally {
      await died.close();
    }
    const resumed = await startSecondInstance(first);
    try {
      const recorded = await events();
      expect(recorded).toHaveLength(eventsBefore + 1);
      // Counts over both runs, each row once.
      expect(recorded[recorded.length - 1].data).toEqual({ tagged: expected });
      expect(await untagged()).toBe(0);
      expect((await dba.query('SELECT * FROM row_integrity_backfill_progress')).rows).toEqual([]);
    } finally {
      await resumed.close();
    }
    // Once: a later start tags nothing more and records nothing.
    await dba.query(`UPDATE tasks SET integrity_tag = NULL WHERE id = (SELECT id FROM tasks ORDER BY id LIMIT 1)`);
    const later = await startSecondInstance(first);
    try {
      expect(await events()).toHaveLength(eventsBefore + 1);
      expect(await untagged()).toBe(1);
    } finally {
      await later.close();
    }
  }, 180_000);

  it('runs a batch again when it waited past lock_timeout for a row a request holds, instead of giving up the tagging', async () => {
    expected = await beforeTheUpgrade();
    const eventsBefore = (await events()).length;
    const holder = await holdLastTask();
    let starting: Promise<TestServices> | undefined;
    let failed = false;
    try {
      starting = startSecondInstance(first, { env: { WRIT_DB_LOCK_TIMEOUT_MS: '500' } });
      // The batch waiting for the DBA's task, seen in two statements: the first ran out of lock_timeout, the second is its retry.
      const seen = new Set<string>();
      await eventually(
        async () => {
          for (const row of await waiting()) if (row.blockers.includes(holder.pid)) seen.add(row.since);
          return seen.size;
        },
        (size) => size >= 2,
        60_000,
      );
      expect(seen.size).toBeGreaterThanOrEqual(2);
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      await holder.release();
      if (failed) await starting?.then((instance) => instance.close()).catch(() => undefined);
    }
    const started = await starting;
    try {
      const recorded = await events();
      expect(recorded).toHaveLength(eventsBefore + 1);
      expect(recorded[recorded.length - 1].data).toEqual({ tagged: expected });
      expect(await untagged()).toBe(0);
    } finally {
      await started.close();
    }
  }, 180_000);

  it('makes a second instance wait for the tagging past its own lock_timeout, not start without it', async () => {
    expected = await beforeTheUpgrade();
    const eventsBefore = (await events()).length;
    const holder = await holdLastTask();
    let tagging: Promise<TestServices> | undefined;
    let waiting_: Promise<TestServices> | undefined;
    let failed = false;
    let waiterStarted = false;
    try {
      tagging = startSecondInstance(first, PATIENT);
      const [tagger] = (
        await eventually(
          async () => ({ rows: await waiting(), holders: await tagLockHolder() }),
          ({ rows, holders }) => rows.some((row) => row.blockers.includes(holder.pid)) && holders.length === 1,
          60_000,
        )
      ).holders;
      waiting_ = startSecondInstance(first, { env: { WRIT_DB_LOCK_TIMEOUT_MS: '500' } });
      void waiting_.then(() => (waiterStarted = true)).catch(() => undefined);
      // Its wait for the lock, seen in two statements: the first ran out of its lock_timeout, the second asks again.
      const seen = new Set<string>();
      await eventually(
        async () => {
          for (const row of await waiting()) if (row.blockers.includes(tagger) && /pg_advisory_lock/.test(row.query)) seen.add(`${row.pid} ${row.since}`);
          return seen.size;
        },
        (size) => size >= 2,
        60_000,
      );
      expect(seen.size).toBeGreaterThanOrEqual(2);
      expect(waiterStarted).toBe(false);
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      await holder.release();
      if (failed) for (const start of [tagging, waiting_]) await start?.then((instance) => instance.close()).catch(() => undefined);
    }
    const instances = await Promise.all([tagging, waiting_]);
    try {
      const recorded = await events();
      expect(recorded).toHaveLength(eventsBefore + 1);
      expect(recorded[recorded.length - 1].data).toEqual({ tagged: expected });
      expect(await untagged()).toBe(0);
    } finally {
      await Promise.all(instances.map((instance) => instance.close()));
    }
  }, 180_000);
});
