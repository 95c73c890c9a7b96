import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, seedWorld, World } from './support/grant-flow';
import { http, type TestResponse } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/** Instants within one millisecond, newest first (PostgreSQL keeps microseconds; a JavaScript Date does not). */
const WITHIN_ONE_MS = ['2026-05-01T00:00:00.123900Z', '2026-05-01T00:00:00.123500Z', '2026-05-01T00:00:00.123100Z'];

/**
 * Admin lists ordered by a timestamp page with a cursor that must not lose rows stamped within
 * the millisecond of a page's last row: the cursor is carried as a millisecond ISO string, so the
 * order and the comparison are on the millisecond too (as the admin token list does). Before,
 * a task, approval or policy version stamped later within that millisecond than the next
 * page's start was skipped: with `?limit=1`, only the first of these rows was ever listed.
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
    expect([...walked].sort()).toEqual([...ids].sort());
    expect(new Set(walked).size).toBe(walked.length);
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
    expect([...walked].sort()).toEqual([...ids].sort());
    expect(new Set(walked).size).toBe(walked.length);
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
    expect([...walked].sort()).toEqual(versions);
    expect(new Set(walked).size).toBe(walked.length);
  });
});
