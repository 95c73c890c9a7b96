import { randomUUID } from 'node:crypto';
import { Client, type Pool } from 'pg';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { TaskReader } from '../libs/grants/src/task-view';
import { createTask, seedWorld, World } from './support/grant-flow';
import { http, type TestResponse } from './support/oauth-client';
import { explainAsSent } from './support/query-plan';
import { startTestServices, TestServices } from './support/test-services';

/** Instants within one millisecond, newest first (PostgreSQL keeps microseconds; a JavaScript Date does not). */
const WITHIN_ONE_MS = ['2026-05-01T00:00:00.123900Z', '2026-05-01T00:00:00.123500Z', '2026-05-01T00:00:00.123100Z'];
const cursorOf = (value: unknown): string => Buffer.from(JSON.stringify(value), 'utf8').toString('base64url');
const decoded = (cursor: string): Record<string, string> => JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
/** Instants a position must refuse before PostgreSQL sees them (impossible, unrepresentable or not UTC). */
const BAD_INSTANTS = [
  '2026-02-30T00:00:00Z',
  '2026-04-31T00:00:00.000000Z',
  '2026-01-01T24:00:00Z',
  '2026-01-01T23:59:60Z',
  '0000-01-01T00:00:00Z',
  '1969-12-31T23:59:59Z',
  '2026-01-01T00:00:00.1234567Z',
  '2026-01-01T00:00:00+01:00',
  '2026-01-01 00:00:00',
  'infinity',
  12345,
];

/**
 * Admin lists ordered by a timestamp page with a cursor that must not lose rows stamped within
 * the millisecond of a page's last row. The order is the column's own, to the microsecond (time
 * descending, then id or version descending), and the cursor carries the last row's exact
 * instant, so the keyset comparison stays on the raw column and its index serves the pages.
 * Before, the cursor carried a millisecond ISO string: a task, approval or policy version stamped
 * later within that millisecond than the next page's start was skipped (with `?limit=1`, only the
 * first of these rows was ever listed). A cursor of that older form is still read.
 */
describe('admin lists: rows within one millisecond across a page boundary', () => {
  let services: TestServices;
  let pool: Pool;
  let world: World;

  const admin = (path: string): Promise<TestResponse> => http(`${services.adminUrl}${path}`, { headers: { authorization: `Bearer ${services.adminToken}` } });
  async function walk(path: string, key: string): Promise<string[]> {
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 50; pages++) {
      const page = await admin(`${path}${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      seen.push(...page.body.items.map((item: Record<string, string>) => item[key]));
      cursor = page.body.next_cursor;
      if (!cursor) break;
    }
    return seen;
  }

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    pool = services.runtime.pool;
    world = await seedWorld(pool);
  });
  afterAll(() => services.close());

  it('tasks', async () => {
    const ids: string[] = [];
    for (const at of WITHIN_ONE_MS) {
      const task = await createTask(services, world.orchestrator, { agent_id: 'agent-2' });
      await pool.query('UPDATE tasks SET created_at = $2 WHERE id = $1', [task.task_id, at]);
      ids.push(task.task_id);
    }
    const walked = await walk('/v1/tasks?agent_id=agent-2&limit=1', 'task_id');
    expect(walked).toEqual(ids);
    // The cursor carries the microseconds of the page's last row.
    const first = await admin('/v1/tasks?agent_id=agent-2&limit=1');
    expect(decoded(first.body.next_cursor)).toEqual({ c: WITHIN_ONE_MS[0], i: ids[0] });
    // A cursor of the older form (milliseconds) is read as before: every row before its instant.
    const older = await admin(`/v1/tasks?agent_id=agent-2&cursor=${cursorOf({ c: '2026-05-01T00:00:00.124Z', i: ids[0] })}`);
    expect(older.status).toBe(200);
    expect(older.body.items.map((item: { task_id: string }) => item.task_id)).toEqual(ids);
  });

  it('approvals', async () => {
    const task = await createTask(services, world.orchestrator, { agent_id: 'agent-1' });
    const ids: string[] = [];
    for (const at of WITHIN_ONE_MS) {
      const id = randomUUID();
      await pool.query(
        `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, requested_at, expires_at)
         VALUES ($1, $2, 'agent-1', 'payments', '[]', '[]', 'v', 'denied', $3, $3::timestamptz + interval '1 hour')`,
        [id, task.task_id, at],
      );
      ids.push(id);
    }
    const walked = await walk(`/v1/approvals?task_id=${task.task_id}&limit=1`, 'id');
    expect(walked).toEqual(ids);
    const first = await admin(`/v1/approvals?task_id=${task.task_id}&limit=1`);
    expect(decoded(first.body.next_cursor)).toEqual({ at: WITHIN_ONE_MS[0], id: ids[0] });
    const older = await admin(`/v1/approvals?task_id=${task.task_id}&cursor=${cursorOf({ at: '2026-05-01T00:00:00.124Z', id: ids[0] })}`);
    expect(older.status).toBe(200);
    expect(older.body.items.map((item: { id: string }) => item.id)).toEqual(ids);
  });

  it('policy versions', async () => {
    const versions: string[] = [];
    for (const [index, at] of WITHIN_ONE_MS.entries()) {
      const version = `precision-${index}`;
      await pool.query(`INSERT INTO policies (version, bundle, source, loaded_by, loaded_at, active) VALUES ($1, '\\x00', 'test', 'test', $2, false)`, [
        version,
        at,
      ]);
      versions.push(version);
    }
    const walked = (await walk('/v1/policies/history?limit=1', 'version')).filter((version) => version.startsWith('precision-'));
    expect(walked).toEqual(versions);
    const older = await admin(`/v1/policies/history?cursor=${cursorOf({ at: '2026-05-01T00:00:00.124Z', v: '' })}`);
    expect(older.status).toBe(200);
    expect(older.body.items.map((item: { version: string }) => item.version).filter((version: string) => version.startsWith('precision-'))).toEqual(versions);
  });

  it('refuses a cursor whose instant or key is not a real position, with a 400 naming cursor', async () => {
    const id = randomUUID();
    const lists: [string, (at: unknown) => Record<string, unknown>][] = [
      ['/v1/tasks?agent_id=agent-2', (at) => ({ c: at, i: id })],
      ['/v1/tasks', (at) => ({ c: at, i: id })],
      ['/v1/approvals', (at) => ({ at, id })],
      ['/v1/policies/history', (at) => ({ at, v: 'precision-0' })],
    ];
    for (const [path, position] of lists) {
      for (const at of BAD_INSTANTS) {
        const page = await admin(`${path}${path.includes('?') ? '&' : '?'}cursor=${cursorOf(position(at))}`);
        expect({ path, at, status: page.status, fields: page.body.fields?.map((entry: { field: string }) => entry.field) }).toEqual({
          path,
          at,
          status: 400,
          fields: ['cursor'],
        });
      }
    }
    // A policy version that PostgreSQL cannot compare (NUL) is refused too, not a 500.
    const nul = await admin(`/v1/policies/history?cursor=${cursorOf({ at: WITHIN_ONE_MS[0], v: 'a\u0000b' })}`);
    expect(nul.status).toBe(400);
    expect(nul.body.fields.map((entry: { field: string }) => entry.field)).toEqual(['cursor']);
  });

  it("pages an agent's tasks through an index in the list's order, with no sort of the agent's tasks", async () => {
    // 20 agents of 1,000 tasks each, stamped a microsecond apart, two of an agent's tasks on each
    // instant (ties broken by id). With fresh statistics the planner picks this plan by itself; it
    // is also told to avoid sequential and bitmap scans so that the check does not hang on cost
    // estimates: what is checked is that the order and the cursor's comparison let the index
    // serve the page at all (an order by date_trunc cannot: every page sorts all the agent's tasks).
    await pool.query(
      `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, status, task_token_jti, created_at, expires_at)
       SELECT gen_random_uuid(), 'explain-' || (n % 20), 'orch-1', 'explain', '[]', 'active', 'explain-' || n,
              timestamptz '2026-01-01T00:00:00Z' + (n / 40) * interval '1 microsecond', now() + interval '1 hour'
         FROM generate_series(0, 19999) AS n`,
    );
    // Fresh statistics: ANALYZE needs the table's owner (the service login would skip it with a warning).
    const owner = new Client({ connectionString: services.db.url });
    await owner.connect();
    try {
      await owner.query('ANALYZE tasks');
    } finally {
      await owner.end();
    }
    const client = await pool.connect();
    try {
      await client.query('SET enable_seqscan = off');
      await client.query('SET enable_bitmapscan = off');
      // The statement TaskReader runs for the second page of an agent's tasks, explained as sent.
      const { result: page, nodes } = await explainAsSent(client, (recorder) =>
        new TaskReader(recorder).list({ agentId: 'explain-7' }, { limit: 50, before: { createdAt: '2026-01-01T00:00:00.000400Z', id: randomUUID() } }),
      );
      expect(page.items.length).toBe(50);
      // An index in the list's order serves the page, bounded by the cursor: the agent's own
      // (agent_id, created_at, id), or, when the agent has many of the tasks, (created_at, id)
      // filtered by agent (the planner's choice by the statistics).
      const scan = nodes.find((node) => node['Index Name'] === 'tasks_agent' || node['Index Name'] === 'tasks_created');
      expect(scan).toEqual(expect.objectContaining({ 'Node Type': 'Index Scan', 'Scan Direction': 'Backward' }));
      expect(scan?.['Index Cond']).toMatch(/created_at/);
      // No sort at all: both indexes end with id, the order's tie-break (ListOrderIndexes1764620000000).
      expect(nodes.map((node) => node['Node Type']).filter((type) => /Sort/.test(type))).toEqual([]);
    } finally {
      await client.query('RESET ALL');
      client.release();
    }
  });
});
