import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { sendJson, tokenRequest } from './support/oauth-client';
import { seedOrchestrator } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

/**
 * A task's grants are a list that its agent grows (one credential per exchange, about two
 * thousand a second on one instance): reading the task shows them a bounded page at a time, so
 * that a hijacked agent cannot make its orchestrator's (or an admin's) read of the task, or
 * ending it, load every credential it minted into the authorization server's memory.
 */
describe('a task read pages its grants', () => {
  let services: TestServices;
  let world: World;
  let token: string;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    token = await tasksToken(services, world.orchestrator);
  });
  afterAll(() => services.close());

  const mint = async (taskToken: string, count: number): Promise<string[]> => {
    const jtis: string[] = [];
    for (let done = 0; done < count; done += 25) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(25, count - done) }, () => tokenRequest(services.issuer, world.agent, exchangeFields(taskToken, PAYOUT_REQUEST))),
      );
      for (const response of batch) {
        expect(response.status).toBe(200);
        jtis.push(JSON.parse(Buffer.from(response.body.access_token.split('.')[1], 'base64url').toString()).jti);
      }
    }
    return jtis;
  };
  const read = (id: string, cursor?: string, bearer = token) =>
    sendJson('GET', `${services.issuer}/v1/tasks/${id}${cursor === undefined ? '' : `?grants_cursor=${encodeURIComponent(cursor)}`}`, undefined, bearer);
  const adminRead = (id: string, cursor?: string) =>
    sendJson(
      'GET',
      `${services.adminUrl}/v1/tasks/${id}${cursor === undefined ? '' : `?grants_cursor=${encodeURIComponent(cursor)}`}`,
      undefined,
      services.adminToken,
    );

  /** Every grant of a task, page after page, with the pages' sizes. */
  const walk = async (reader: (cursor?: string) => ReturnType<typeof read>) => {
    const sizes: number[] = [];
    const grants: Array<{ jti: string; issued_at: string }> = [];
    let cursor: string | undefined;
    do {
      const page = await reader(cursor);
      expect(page.status).toBe(200);
      sizes.push(page.body.grants.length);
      grants.push(...page.body.grants);
      cursor = page.body.grants_next_cursor ?? undefined;
    } while (cursor !== undefined && sizes.length < 10);
    return { sizes, grants };
  };

  let busy: { task_id: string; task_token: string };
  let busyJtis: string[];
  let quiet: { task_id: string; task_token: string };
  let quietJtis: string[];

  beforeAll(async () => {
    busy = await createTask(services, world.orchestrator);
    quiet = await createTask(services, world.orchestrator);
    busyJtis = await mint(busy.task_token, 230);
    quietJtis = await mint(quiet.task_token, 3);
  });

  it('shows at most 100 grants per read, oldest first, and the rest page by page through grants_next_cursor', async () => {
    const first = await read(busy.task_id);
    expect(first.status).toBe(200);
    expect(first.body.history.grants_issued).toBe(230);
    expect(first.body.grants).toHaveLength(100);
    expect(typeof first.body.grants_next_cursor).toBe('string');
    const { sizes, grants } = await walk((cursor) => read(busy.task_id, cursor));
    expect(sizes).toEqual([100, 100, 30]);
    expect(new Set(grants.map((grant) => grant.jti))).toEqual(new Set(busyJtis));
    const instants = grants.map((grant) => Date.parse(grant.issued_at));
    expect(instants).toEqual([...instants].sort((a, b) => a - b));
    // A task with few grants shows them all, and no cursor.
    const small = await read(quiet.task_id);
    expect(small.body.grants.map((grant: { jti: string }) => grant.jti).sort()).toEqual([...quietJtis].sort());
    expect(small.body.grants_next_cursor).toBeNull();
  });

  it('pages the admin view the same way', async () => {
    const { sizes, grants } = await walk((cursor) => adminRead(busy.task_id, cursor));
    expect(sizes).toEqual([100, 100, 30]);
    expect(new Set(grants.map((grant) => grant.jti))).toEqual(new Set(busyJtis));
  });

  it('never shows another task through a cursor: a cursor is a position, the task comes from the path', async () => {
    const first = await read(busy.task_id);
    const moved = await read(quiet.task_id, first.body.grants_next_cursor);
    expect(moved.status).toBe(200);
    for (const grant of moved.body.grants) expect(quietJtis).toContain(grant.jti);
    // Another orchestrator gets nothing of the task, cursor or not.
    const other = await seedOrchestrator(services.runtime.pool, 'orch-pages-other', ['agent-1']);
    const otherToken = await tasksToken(services, other);
    expect((await read(busy.task_id, first.body.grants_next_cursor, otherToken)).status).toBe(404);
  });

  it('refuses a cursor that is not one, naming grants_cursor', async () => {
    for (const cursor of ['garbage!', Buffer.from('{"i":"2026-01-01T00:00:00Z"}').toString('base64url'), 'x'.repeat(2000)]) {
      const refused = await read(busy.task_id, cursor);
      expect(refused.status).toBe(400);
      expect(JSON.stringify(refused.body)).toContain('grants_cursor');
    }
    const repeated = await sendJson('GET', `${services.issuer}/v1/tasks/${busy.task_id}?grants_cursor=a&grants_cursor=b`, undefined, token);
    expect(repeated.status).toBe(400);
  });

  it('ends a task with many grants, revoking every one of them, and answers one page', async () => {
    const completed = await sendJson('POST', `${services.issuer}/v1/tasks/${busy.task_id}/complete`, undefined, token);
    expect(completed.status).toBe(200);
    expect(completed.body.status).toBe('completed');
    expect(completed.body.grants).toHaveLength(100);
    const { rows } = await services.runtime.pool.query(`SELECT count(*)::int AS live FROM access_tokens WHERE task_id = $1 AND revoked_at IS NULL`, [
      busy.task_id,
    ]);
    expect(rows[0].live).toBe(0);
  });
});
