import { Client, type Pool, type PoolClient } from 'pg';
import { ApprovalStore } from '../libs/grants/src/approval-store';
import { TaskReader } from '../libs/grants/src/task-view';
import { seedWorld } from './support/grant-flow';
import { explainAsSent, type PlanNode } from './support/query-plan';
import { startTestServices, TestServices } from './support/test-services';

/**
 * The admin API's task and approval lists page through an index in their order: each page is an
 * index scan (backward, `ORDER BY time DESC, id DESC`) bounded by the cursor's row comparison,
 * never a sort. Before, the unfiltered lists had no index in their order (each page sorted the
 * whole table) and the filtered ones stopped at the time (an incremental sort by id).
 */
describe('admin lists: pages are index scans in the list order, never sorts', () => {
  let services: TestServices;
  let pool: Pool;
  let client: PoolClient;

  /** The plan of the statement `list` sends, explained as sent. */
  async function planOf(list: (recorder: Pool) => Promise<unknown>): Promise<PlanNode[]> {
    return (await explainAsSent(client, list)).nodes;
  }

  function expectIndexOrder(label: string, nodes: PlanNode[], index: string): void {
    const types = nodes.map((node) => node['Node Type']);
    expect([label, types.filter((type) => /Sort/.test(type))]).toEqual([label, []]);
    const scan = nodes.find((node) => node['Index Name'] === index);
    expect([label, scan?.['Node Type'], scan?.['Scan Direction']]).toEqual([label, 'Index Scan', 'Backward']);
  }

  beforeAll(async () => {
    services = await startTestServices();
    pool = services.runtime.pool;
    await seedWorld(pool);
    // 20,000 tasks of 200 agents and 100 orchestrators (two per microsecond, ties broken by id), and an approval each.
    await pool.query(
      `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, status, task_token_jti, created_at, expires_at)
       SELECT gen_random_uuid(), 'indexed-' || (n % 200), 'indexed-orch-' || (n % 100), 'indexed', '[]', CASE WHEN n % 50 = 0 THEN 'revoked' ELSE 'active' END,
              'indexed-' || n, timestamptz '2026-01-01T00:00:00Z' + (n / 2) * interval '1 microsecond', now() + interval '1 hour'
         FROM generate_series(0, 19999) AS n`,
    );
    await pool.query(
      `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, requested_at, expires_at)
       SELECT gen_random_uuid(), id, agent_id, 'payments', '[]', '[]', 'v', CASE WHEN random() < 0.1 THEN 'pending' ELSE 'denied' END, created_at, now() + interval '1 hour'
         FROM tasks WHERE purpose = 'indexed'`,
    );
    // Fresh statistics: ANALYZE needs the tables' owner (the service login would skip it with a warning).
    const owner = new Client({ connectionString: services.db.url });
    await owner.connect();
    try {
      await owner.query('ANALYZE tasks, approvals');
    } finally {
      await owner.end();
    }
    client = await pool.connect();
    // Told to avoid sequential and bitmap scans so the check does not hang on cost estimates:
    // what is checked is that the order and the cursor's comparison let an index serve a page.
    await client.query('SET enable_seqscan = off');
    await client.query('SET enable_bitmapscan = off');
  });
  afterAll(async () => {
    await client?.query('RESET ALL');
    client?.release();
    await services?.close();
  });

  const cursor = { createdAt: '2026-01-01T00:00:00.005000Z', id: '00000000-0000-0000-0000-000000000000' };

  it('tasks: unfiltered, and by agent, orchestrator and status, first page and later pages', async () => {
    for (const before of [undefined, cursor]) {
      const page = before ? 'later page' : 'first page';
      expectIndexOrder(`unfiltered, ${page}`, await planOf((db) => new TaskReader(db).list({}, { limit: 50, before })), 'tasks_created');
      expectIndexOrder(`agent, ${page}`, await planOf((db) => new TaskReader(db).list({ agentId: 'indexed-7' }, { limit: 50, before })), 'tasks_agent');
      expectIndexOrder(
        `orchestrator, ${page}`,
        await planOf((db) => new TaskReader(db).list({ orchestratorId: 'indexed-orch-3' }, { limit: 50, before })),
        'tasks_orchestrator',
      );
      expectIndexOrder(`status, ${page}`, await planOf((db) => new TaskReader(db).list({ status: 'revoked' }, { limit: 50, before })), 'tasks_status');
    }
  });

  it('approvals: unfiltered, by task and by status, first page and later pages', async () => {
    const { rows } = await pool.query<{ task_id: string }>(`SELECT task_id FROM approvals LIMIT 1`);
    const store = (db: Pool) => new ApprovalStore(db, undefined as never, undefined as never);
    for (const before of [undefined, { at: cursor.createdAt, id: cursor.id }]) {
      const page = before ? 'later page' : 'first page';
      expectIndexOrder(`unfiltered, ${page}`, await planOf((db) => store(db).list({}, { limit: 50, before })), 'approvals_requested');
      expectIndexOrder(`task, ${page}`, await planOf((db) => store(db).list({ taskId: rows[0].task_id }, { limit: 50, before })), 'approvals_task');
      expectIndexOrder(`pending, ${page}`, await planOf((db) => store(db).list({ status: 'pending' }, { limit: 50, before })), 'approvals_pending');
      for (const status of ['denied', 'expired', 'approved']) {
        const nodes = await planOf((db) => store(db).list({ status }, { limit: 50, before }));
        expect([status, page, nodes.map((node) => node['Node Type']).filter((type) => /Sort/.test(type))]).toEqual([status, page, []]);
      }
    }
  });
});
