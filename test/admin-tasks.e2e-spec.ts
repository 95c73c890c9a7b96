import { join } from 'node:path';
import { clientAuthFields, retagRow } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { postForm, sendJson, TestClient, TestResponse, tokenRequest } from './support/oauth-client';
import { seedAgent } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

describe('admin API: suspension, tasks, evidence, policy dry runs', () => {
  let services: TestServices;
  let world: World;
  let operator: string;
  let viewer: string;

  const api = <T = any>(method: string, path: string, body?: unknown, token: string = services.adminToken): Promise<TestResponse<T>> =>
    sendJson<T>(method, `${services.adminUrl}${path}`, body, token);
  /** Introspects as the orchestrator (it may introspect its tasks' tokens, whatever the agent's state). */
  const introspect = async (token: string) =>
    (
      await postForm(`${services.issuer}/oauth2/introspect`, {
        token,
        ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, services.issuer)),
      })
    ).body;
  const issue = async (agent: TestClient = world.agent, overrides: Record<string, unknown> = {}) => {
    const task = await createTask(services, world.orchestrator, { agent_id: agent.id, ...overrides });
    const response = await tokenRequest(services.issuer, agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(response.status).toBe(200);
    return { task, token: response.body.access_token as string };
  };
  const count = async (sql: string, values: unknown[] = []) => (await services.runtime.pool.query(sql, values)).rows[0].n as number;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    operator = (await api('POST', '/v1/admin-tokens', { name: 'operator', role: 'operator' })).body.token;
    viewer = (await api('POST', '/v1/admin-tokens', { name: 'viewer', role: 'viewer' })).body.token;
  });
  afterAll(() => services.close());

  describe('agent suspension and deletion', () => {
    it('suspending an agent makes its issued credential introspect inactive, in one transaction with the events', async () => {
      const { task, token } = await issue();
      expect(await introspect(token)).toMatchObject({ active: true, task_id: task.task_id });
      const suspended = await api('PATCH', '/v1/agents/agent-1', { status: 'suspended' }, operator);
      expect(suspended.status).toBe(200);
      expect(suspended.body.status).toBe('suspended');
      expect(await introspect(token)).toEqual({ active: false });
      const exchange = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
      expect(exchange.status).not.toBe(200);
      const events = await services.runtime.pool.query(
        `SELECT type, actor_type, data FROM audit_events WHERE agent_id = 'agent-1' AND type IN ('admin.agent.suspended', 'token.revoked') ORDER BY seq`,
      );
      expect(events.rows).toEqual([
        { type: 'admin.agent.suspended', actor_type: 'admin', data: { tokens_revoked: 1 } },
        { type: 'token.revoked', actor_type: 'admin', data: { reason: 'agent suspended', jtis: [expect.any(String)], count: 1 } },
      ]);
      const reactivated = await api('PATCH', '/v1/agents/agent-1', { status: 'active' }, operator);
      expect(reactivated.body.status).toBe('active');
      expect(await introspect(token)).toEqual({ active: false });
      expect(await count(`SELECT count(*)::int AS n FROM audit_events WHERE type = 'admin.agent.reactivated' AND agent_id = 'agent-1'`)).toBe(1);
    });

    it('deleting an agent ends its active tasks as revoked and revokes its credentials', async () => {
      const doomed = await seedAgent(services.runtime.pool, 'agent-doomed');
      await services.runtime.pool.query(`UPDATE orchestrators SET allowed_agents = array_append(allowed_agents, 'agent-doomed') WHERE id = 'orch-1'`);
      await retagRow(services.runtime.pool, services.runtime.rowIntegrity, 'orchestrators', 'orch-1');
      const { task, token } = await issue(doomed);
      expect((await api('DELETE', '/v1/agents/agent-doomed', undefined, viewer)).status).toBe(403);
      const deleted = await api('DELETE', '/v1/agents/agent-doomed', undefined, operator);
      expect(deleted.status).toBe(204);
      expect(await introspect(token)).toEqual({ active: false });
      expect((await api('GET', `/v1/tasks/${task.task_id}`)).body).toMatchObject({ status: 'revoked', status_reason: 'agent deleted' });
      expect((await api('GET', '/v1/agents/agent-doomed')).status).toBe(404);
      const events = await services.runtime.pool.query(
        `SELECT type, task_id FROM audit_events WHERE agent_id = 'agent-doomed' AND actor_type = 'admin' ORDER BY seq`,
      );
      expect(events.rows).toEqual([
        { type: 'admin.agent.deleted', task_id: null },
        { type: 'task.revoked', task_id: task.task_id },
        { type: 'token.revoked', task_id: null },
      ]);
    });
  });

  describe('tasks', () => {
    it('revokes a task and its credentials before answering; an operator may, a viewer may not', async () => {
      const { task, token } = await issue();
      const refused = await api('POST', `/v1/tasks/${task.task_id}/revoke`, { reason: 'x' }, viewer);
      expect(refused.status).toBe(403);
      expect(await introspect(token)).toMatchObject({ active: true });
      const revoked = await api('POST', `/v1/tasks/${task.task_id}/revoke`, { reason: 'prompt injection suspected' }, operator);
      expect(revoked.status).toBe(200);
      expect(revoked.body).toMatchObject({
        task_id: task.task_id,
        status: 'revoked',
        status_reason: 'prompt injection suspected',
        ended_at: expect.any(String),
      });
      expect(revoked.body.grants).toEqual([expect.objectContaining({ state: 'revoked', revoked_reason: 'task revoked' })]);
      expect(await introspect(token)).toEqual({ active: false });
      const again = await api('POST', `/v1/tasks/${task.task_id}/revoke`, undefined, operator);
      expect(again.status).toBe(200);
      expect(again.body.status_reason).toBe('prompt injection suspected');
      const events = await services.runtime.pool.query(
        `SELECT type, actor_type, data FROM audit_events WHERE task_id = $1 AND actor_type = 'admin' ORDER BY seq`,
        [task.task_id],
      );
      expect(events.rows.map((row) => row.type)).toEqual(['task.revoked', 'token.revoked']);
      expect(events.rows[0].data).toEqual({ status: 'revoked', reason: 'prompt injection suspected' });
      expect(events.rows[1].data).toMatchObject({ count: 1 });
    });

    it('answers 404 for an unknown task and refuses unknown revoke fields', async () => {
      expect((await api('GET', '/v1/tasks/00000000-0000-4000-8000-000000000000')).status).toBe(404);
      expect((await api('GET', '/v1/tasks/not-a-uuid')).body).toEqual({ error: 'not_found', message: 'task not found' });
      expect((await api('POST', '/v1/tasks/00000000-0000-4000-8000-000000000000/revoke', {})).status).toBe(404);
      const { task } = await issue();
      const unknown = await api('POST', `/v1/tasks/${task.task_id}/revoke`, { reason: 'x', cascade: true });
      expect(unknown.status).toBe(400);
      expect(unknown.body.fields).toEqual([{ field: 'cascade', message: 'unknown field' }]);
      expect((await api('GET', `/v1/tasks/${task.task_id}`)).body.status).toBe('active');
    });

    it('lists tasks newest first with filters and cursor pages', async () => {
      await services.runtime.pool.query(`UPDATE orchestrators SET allowed_agents = array_append(allowed_agents, 'agent-2') WHERE id = 'orch-1'`);
      await retagRow(services.runtime.pool, services.runtime.rowIntegrity, 'orchestrators', 'orch-1');
      for (let n = 0; n < 3; n += 1) await createTask(services, world.orchestrator, { agent_id: 'agent-2' });
      const ids: string[] = [];
      let cursor: string | null = null;
      do {
        const page: TestResponse = await api('GET', `/v1/tasks?agent_id=agent-2&limit=2${cursor ? `&cursor=${cursor}` : ''}`, undefined, viewer);
        expect(page.status).toBe(200);
        expect(page.body.items.every((task: { agent_id: string }) => task.agent_id === 'agent-2')).toBe(true);
        ids.push(...page.body.items.map((task: { task_id: string }) => task.task_id));
        cursor = page.body.next_cursor;
      } while (cursor);
      const { rows } = await services.runtime.pool.query(`SELECT id FROM tasks WHERE agent_id = 'agent-2' ORDER BY created_at DESC, id DESC`);
      expect(ids).toEqual(rows.map((row) => row.id));
      const revoked = await api('GET', '/v1/tasks?status=revoked&limit=200');
      expect(revoked.body.items.length).toBeGreaterThan(0);
      expect(revoked.body.items.every((task: { status: string }) => task.status === 'revoked')).toBe(true);
      expect((await api('GET', '/v1/tasks?status=paused')).body.fields).toEqual([{ field: 'status', message: expect.any(String) }]);
    });

    it('gives the evidence of a task: its events in chain order, with hashes, verified', async () => {
      const { task } = await issue();
      await api('POST', `/v1/tasks/${task.task_id}/revoke`, { reason: 'evidence test' });
      const evidence = await api('GET', `/v1/tasks/${task.task_id}/evidence`, undefined, viewer);
      expect(evidence.status).toBe(200);
      expect(evidence.body.task).toMatchObject({ task_id: task.task_id, status: 'revoked' });
      const events = evidence.body.events as Array<{ seq: number; type: string; hash: string; prev_hash: string; task_id: string }>;
      expect(events.map((event) => event.type)).toEqual(['task.created', 'grant.decision', 'token.issued', 'task.revoked', 'token.revoked']);
      expect(events.every((event) => event.task_id === task.task_id && /^[0-9a-f]{64}$/.test(event.hash) && /^[0-9a-f]{64}$/.test(event.prev_hash))).toBe(true);
      const seqs = events.map((event) => event.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      expect(evidence.body.chain).toEqual({ first_seq: seqs[0], last_seq: seqs[seqs.length - 1], verified: true });
      const stored = await services.runtime.pool.query('SELECT seq, hash FROM audit_events WHERE task_id = $1 ORDER BY seq', [task.task_id]);
      expect(events.map((event) => ({ seq: event.seq, hash: event.hash }))).toEqual(stored.rows.map((row) => ({ seq: Number(row.seq), hash: row.hash })));
      expect((await api('GET', '/v1/tasks/00000000-0000-4000-8000-000000000000/evidence')).status).toBe(404);
    });
  });

  describe('policy dry run', () => {
    const snapshot = async () => ({
      tokens: await count('SELECT count(*)::int AS n FROM access_tokens'),
      events: await count('SELECT count(*)::int AS n FROM audit_events'),
    });

    it('shows the active policy', async () => {
      const response = await api('GET', '/v1/policies', undefined, viewer);
      expect(response.status).toBe(200);
      expect(response.body).toEqual({
        version: services.policy.current().version,
        source: services.policy.path,
        loaded_at: expect.any(String),
        loaded_by: 'startup',
        entrypoint: 'writ/grant/decision',
        format: expect.stringMatching(/^(wasm|bundle)$/),
      });
    });

    it('allows an in-purpose request and denies an out-of-purpose one, issuing and recording nothing', async () => {
      const task = await createTask(services, world.orchestrator);
      const before = await snapshot();
      const refusalsBefore = await count('SELECT refusals AS n FROM tasks WHERE id = $1', [task.task_id]);
      const allowed = await api('POST', '/v1/policies/evaluate', { task_id: task.task_id, authorization_details: PAYOUT_REQUEST }, operator);
      expect(allowed.status).toBe(200);
      expect(allowed.body).toMatchObject({
        policy_version: services.policy.current().version,
        decision: { allow: true, max_ttl_seconds: 120, out_of_purpose: false },
        violations: [],
      });
      expect(allowed.body.input).toMatchObject({
        request: { authorization_details: PAYOUT_REQUEST },
        agent: { id: 'agent-1', status: 'active' },
        task: { id: task.task_id, status: 'active' },
        connectors: { payments: { id: 'payments' } },
      });
      const outside = [{ ...PAYOUT_REQUEST[0], constraints: { destination: 'acct_evil', amount_max: 42000, currency: 'usd' } }];
      const denied = await api('POST', '/v1/policies/evaluate', { task_id: task.task_id, authorization_details: outside }, operator);
      expect(denied.status).toBe(200);
      expect(denied.body.decision.allow).toBe(false);
      expect(denied.body.decision.reasons.join(' ')).toMatch(/destination/);
      expect(denied.body.violations.join(' ')).toMatch(/destination/);
      expect(await snapshot()).toEqual(before);
      expect(await count('SELECT refusals AS n FROM tasks WHERE id = $1', [task.task_id])).toBe(refusalsBefore);
    });

    it('reports what the exchange refuses before the policy: foreign locations, another resource', async () => {
      const task = await createTask(services, world.orchestrator);
      const gateway = services.runtime.config.gatewayUrl;
      const elsewhere = [{ ...PAYOUT_REQUEST[0], locations: ['https://attacker.example/connectors/payments'] }];
      const foreign = await api('POST', '/v1/policies/evaluate', { task_id: task.task_id, authorization_details: elsewhere }, operator);
      expect(foreign.status).toBe(200);
      expect(foreign.body.violations[0]).toContain('locations[0] must be the URL of the connector');
      const other = await api(
        'POST',
        '/v1/policies/evaluate',
        { task_id: task.task_id, authorization_details: PAYOUT_REQUEST, resource: `${gateway}/connectors/chat` },
        operator,
      );
      expect(other.body.violations).toEqual(['resource must be the URL of the requested connector']);
      const own = await api(
        'POST',
        '/v1/policies/evaluate',
        { task_id: task.task_id, authorization_details: PAYOUT_REQUEST, resource: `${gateway}/connectors/payments` },
        operator,
      );
      expect(own.body.violations).toEqual([]);
    });

    it('evaluates a raw input, and refuses mixed or incomplete requests by field', async () => {
      const raw = await api('POST', '/v1/policies/evaluate', { input: { request: { authorization_details: [] } } });
      expect(raw.status).toBe(200);
      expect(raw.body).toEqual({ policy_version: expect.any(String), decision: expect.objectContaining({ allow: false }) });
      const mixed = await api('POST', '/v1/policies/evaluate', { input: {}, task_id: '00000000-0000-4000-8000-000000000000' });
      expect(mixed.body.fields).toEqual([{ field: 'task_id', message: 'give either input, or task_id with authorization_details' }]);
      const missing = await api('POST', '/v1/policies/evaluate', {});
      expect(missing.body.fields.map((entry: { field: string }) => entry.field)).toEqual(['task_id', 'authorization_details']);
      const ghost = await api('POST', '/v1/policies/evaluate', { task_id: '00000000-0000-4000-8000-000000000000', authorization_details: PAYOUT_REQUEST });
      expect(ghost.body.fields).toEqual([{ field: 'task_id', message: 'no such task' }]);
      const malformed = await api('POST', '/v1/policies/evaluate', {
        task_id: '00000000-0000-4000-8000-000000000000',
        authorization_details: [{ type: 'bank' }],
      });
      expect(malformed.body.fields.map((entry: { field: string }) => entry.field)).toEqual(['authorization_details[0].type', 'task_id']);
    });

    it('keeps dry runs to operators', async () => {
      const refused = await api('POST', '/v1/policies/evaluate', { input: {} }, viewer);
      expect(refused.status).toBe(403);
      expect(refused.body).toEqual({ error: 'forbidden', message: 'this operation requires the operator role; this token has the viewer role' });
    });
  });
});

describe('admin API: a policy that traps', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({
      admin: createAdminApp,
      env: { WRIT_POLICY: join(__dirname, '..', 'libs', 'policy', 'test-fixtures', 'conflict.wasm') },
    });
  });
  afterAll(() => services.close());

  it('answers the fail-closed deny when the policy traps, and the decision otherwise', async () => {
    const evaluate = (input: unknown) => sendJson('POST', `${services.adminUrl}/v1/policies/evaluate`, { input }, services.adminToken);
    const trapped = await evaluate({ a: true, b: true });
    expect(trapped.status).toBe(200);
    expect(trapped.body.decision).toEqual({
      allow: false,
      reasons: ['the policy could not evaluate the request'],
      max_ttl_seconds: 0,
      max_uses: 0,
      requires_approval: false,
      quarantine: false,
      out_of_purpose: false,
    });
    const allowed = await evaluate({ a: true });
    expect(allowed.body.decision).toMatchObject({ allow: true, reasons: ['a'], max_ttl_seconds: 60, max_uses: 1 });
  });
});
