import { positionInstantSql } from '@writ/database';
import { encodeGrantsCursor } from '@writ/grants';
import { retagRow } from '@writ/testing';
import { createTask, exchangeFields, PAYOUT_ALLOWED, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { seedOrchestrator } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

describe('Tasks API (orchestrators)', () => {
  let services: TestServices;
  let world: World;
  let token: string;

  beforeAll(async () => {
    services = await startTestServices();
    world = await seedWorld(services.runtime.pool);
    token = await tasksToken(services, world.orchestrator);
  });
  afterAll(() => services.close());

  const post = (body: unknown, bearer = token) => sendJson('POST', `${services.issuer}/v1/tasks`, body, bearer);
  const valid = { agent_id: 'agent-1', purpose: 'pay invoice INV-42', allowed: PAYOUT_ALLOWED, ttl_seconds: 600 };

  it('creates a task and shows it with its grants', async () => {
    const created = await post({ ...valid, on_behalf_of: 'user-7', metadata: { invoice: 'INV-42' } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ status: 'active', task_id: expect.any(String), task_token: expect.any(String) });
    expect(Date.parse(created.body.expires_at) - Date.now()).toBeGreaterThan(590_000);
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(created.body.task_token, PAYOUT_REQUEST));
    expect(exchanged.status).toBe(200);
    const shown = await sendJson('GET', `${services.issuer}/v1/tasks/${created.body.task_id}`, undefined, token);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({
      task_id: created.body.task_id,
      agent_id: 'agent-1',
      orchestrator_id: 'orch-1',
      status: 'active',
      on_behalf_of: 'user-7',
      history: { grants_issued: 1, refusals: 0, out_of_purpose_requests: 0 },
    });
    expect(shown.body.grants).toHaveLength(1);
    expect(shown.body.grants[0]).toMatchObject({ connector: 'payments', action: 'payouts.create', state: 'active', max_uses: 1, uses: 0 });
    expect(JSON.stringify(shown.body)).not.toContain(exchanged.body.access_token);
    expect(JSON.stringify(shown.body)).not.toContain(created.body.task_token);
  });

  it('keeps the audit chain verifying when an orchestrator sends metadata with a member named toJSON', async () => {
    const created = await post({ ...valid, metadata: { toJSON: 1, zz: true, a: 'x' } });
    expect(created.status).toBe(201);
    expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
  });

  describe('Idempotency-Key', () => {
    const keyed = (key: string, body: unknown = valid) =>
      http(`${services.issuer}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
        body: JSON.stringify(body),
      });

    it('declares one task for one key, however many copies arrive at once, and each copy works', async () => {
      const key = `retry-${Date.now()}`;
      const answers = await Promise.all(Array.from({ length: 6 }, () => keyed(key)));
      for (const answer of answers) expect(answer.status).toBe(201);
      const ids = new Set(answers.map((answer) => answer.body.task_id));
      expect(ids.size).toBe(1);
      const [taskId] = [...ids];
      const { rows } = await services.runtime.pool.query(`SELECT id FROM tasks WHERE idempotency_key = $1`, [key]);
      expect(rows).toEqual([{ id: taskId }]);
      // One declaration, and every other answer's token on the record.
      const events = await services.runtime.pool.query<{ type: string; n: number }>(
        `SELECT type, count(*)::int AS n FROM audit_events WHERE task_id = $1 GROUP BY type ORDER BY type`,
        [taskId],
      );
      expect(events.rows).toEqual([
        { type: 'task.created', n: 1 },
        { type: 'task.token_reissued', n: 5 },
      ]);
      // Any copy of the task token works (same task, same jti).
      const last = answers[answers.length - 1].body.task_token;
      expect((await tokenRequest(services.issuer, world.agent, exchangeFields(last, PAYOUT_REQUEST))).status).toBe(200);
      // Sent again after the task ended: the same task, as it is now.
      await sendJson('POST', `${services.issuer}/v1/tasks/${taskId}/complete`, undefined, token);
      const later = await keyed(key);
      expect(later.status).toBe(201);
      expect(later.body).toMatchObject({ task_id: taskId, status: 'completed' });
    });

    it('answers a replay after the deadline with the status the task has, expired, as reading it does', async () => {
      const key = `late-${Date.now()}`;
      const first = await keyed(key);
      expect(first.status).toBe(201);
      await services.runtime.pool.query(`UPDATE tasks SET expires_at = now() - interval '1 second' WHERE id = $1`, [first.body.task_id]);
      await retagRow(services.runtime.pool, services.runtime.rowIntegrity, 'tasks', first.body.task_id);
      const shown = await sendJson('GET', `${services.issuer}/v1/tasks/${first.body.task_id}`, undefined, token);
      expect(shown.body.status).toBe('expired');
      const later = await keyed(key);
      expect(later.body).toMatchObject({ task_id: first.body.task_id, status: 'expired' });
      const event = await services.runtime.pool.query(`SELECT data FROM audit_events WHERE task_id = $1 AND type = 'task.token_reissued'`, [
        first.body.task_id,
      ]);
      expect(event.rows[0].data).toMatchObject({ status: 'expired' });
    });

    it('knows a copy whatever the order of its members, also in metadata holding a member named toJSON', async () => {
      const key = `order-${Date.now()}`;
      const first = await keyed(key, { ...valid, metadata: { toJSON: 1, zz: 1, a: 1 } });
      expect(first.status).toBe(201);
      const copy = await keyed(key, { metadata: { a: 1, zz: 1, toJSON: 1 }, ...valid });
      expect(copy.status).toBe(201);
      expect(copy.body.task_id).toBe(first.body.task_id);
    });

    it('refuses another declaration under a used key, and a malformed key, naming it', async () => {
      const key = `once-${Date.now()}`;
      expect((await keyed(key)).status).toBe(201);
      const other = await keyed(key, { ...valid, purpose: 'pay invoice INV-43' });
      expect(other.status).toBe(409);
      expect(other.body.message).toMatch(/Idempotency-Key was used for another task declaration/);
      for (const bad of ['', 'has space', 'x'.repeat(256), 'caf\u00e9']) {
        const refused = await keyed(bad);
        expect(refused.status).toBe(400);
        expect(refused.body.fields).toEqual([{ field: 'Idempotency-Key', message: expect.any(String) }]);
      }
      // Without a key, every request declares a task of its own.
      const [a, b] = await Promise.all([post(valid), post(valid)]);
      expect(a.body.task_id).not.toBe(b.body.task_id);
    });
  });

  it('refuses invalid declarations field by field, and unknown fields', async () => {
    const response = await post({
      agent_id: 'nobody',
      purpose: '',
      allowed: [
        { type: 'connector', connector: 'payments', actions: ['payouts.teleport'] },
        { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { amount_max: 'lots' } },
        { type: 'connector', connector: 'ghost', actions: ['x'] },
      ],
      ttl_seconds: 0,
      sneaky: true,
    });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    const fields = response.body.fields.map((field: { field: string }) => field.field);
    expect(fields).toEqual(expect.arrayContaining(['purpose', 'ttl_seconds', 'sneaky']));
    const semantic = await post({
      ...valid,
      agent_id: 'nobody',
      allowed: [
        { type: 'connector', connector: 'payments', actions: ['payouts.teleport'] },
        { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { amount_max: 'lots' } },
        { type: 'connector', connector: 'ghost', actions: ['x'] },
        { type: 'connector', connector: 'payments', actions: ['payouts.get'], constraints: { bogus: 1 } },
      ],
    });
    expect(semantic.status).toBe(400);
    expect(semantic.body.fields.map((field: { field: string }) => field.field)).toEqual(
      expect.arrayContaining([
        'agent_id',
        'allowed[0].actions[0]',
        'allowed[1].constraints.amount_max',
        'allowed[2].connector',
        'allowed[3].constraints.bogus',
      ]),
    );
    const notJson = await fetch(`${services.issuer}/v1/tasks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{"agent_id":',
    });
    expect(notJson.status).toBe(400);
    expect(((await notJson.json()) as { error: string }).error).toBe('invalid_request');
  });

  describe('a query member a route does not read', () => {
    const refusal = (name: string) => ({ error: 'invalid_request', message: 'the query is invalid', fields: [{ field: name, message: 'unknown field' }] });
    const get = (id: string, query: string, bearer = token) => sendJson('GET', `${services.issuer}/v1/tasks/${id}${query}`, undefined, bearer);

    it('refuses a misspelled grants_cursor, naming it, rather than answering the first page', async () => {
      const task = await createTask(services, world.orchestrator);
      for (let n = 0; n < 2; n++) expect((await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
      const { rows } = await services.runtime.pool.query<{ jti: string; at: string }>(
        `SELECT jti, ${positionInstantSql('issued_at')} AS at FROM access_tokens WHERE task_id = $1 ORDER BY issued_at, jti`,
        [task.task_id],
      );
      expect(rows).toHaveLength(2);
      const cursor = encodeGrantsCursor({ issuedAt: rows[0].at, jti: rows[0].jti });
      // The member the route reads still works: the page after the first grant.
      const known = await get(task.task_id, `?grants_cursor=${cursor}`);
      expect(known.status).toBe(200);
      expect(known.body.grants.map((grant: { jti: string }) => grant.jti)).toEqual([rows[1].jti]);
      // Misspelled, it used to answer the first page (both grants) as if no cursor had been sent.
      for (const name of ['grant_cursor', 'grants-cursor', 'cursor', 'Grants_cursor']) {
        const refused = await get(task.task_id, `?${name}=${cursor}`);
        expect({ name, status: refused.status, body: refused.body }).toEqual({ name, status: 400, body: refusal(name) });
      }
      // Beside a known member, the unknown one is still refused.
      const extra = await get(task.task_id, `?grants_cursor=${cursor}&limit=5`);
      expect([extra.status, extra.body]).toEqual([400, refusal('limit')]);
      // An unauthenticated call is a 401 first.
      expect((await get(task.task_id, `?grant_cursor=${cursor}`, '')).status).toBe(401);
    });

    it.each(['__proto__', 'constructor', 'toString', 'valueOf', 'hasOwnProperty'])('refuses a query member named %s, never ignored', async (name) => {
      const task = await createTask(services, world.orchestrator);
      const refused = await get(task.task_id, `?${name}=1`);
      expect([refused.status, refused.body]).toEqual([400, refusal(name)]);
    });

    it('refuses a query on the routes that read none, changing nothing', async () => {
      const task = await createTask(services, world.orchestrator);
      for (const end of ['complete', 'fail']) {
        const refused = await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/${end}?reason=done`, undefined, token);
        expect([end, refused.status, refused.body]).toEqual([end, 400, refusal('reason')]);
      }
      expect((await get(task.task_id, '')).body.status).toBe('active');
      const count = async () => (await services.runtime.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM tasks`)).rows[0].n;
      const before = await count();
      const declared = await sendJson('POST', `${services.issuer}/v1/tasks?dry_run=true`, valid, token);
      expect([declared.status, declared.body]).toEqual([400, refusal('dry_run')]);
      const prototype = await sendJson('POST', `${services.issuer}/v1/tasks?__proto__=1`, valid, token);
      expect([prototype.status, prototype.body]).toEqual([400, refusal('__proto__')]);
      expect(await count()).toBe(before);
      // Connect links, on the same token: the query is refused before the body is read.
      const link = await sendJson('POST', `${services.issuer}/v1/connections/links?toString=1`, {}, token);
      expect([link.status, link.body]).toEqual([400, refusal('toString')]);
    });
  });

  it('keeps orchestrators to their agents and their own tasks', async () => {
    const narrow = await seedOrchestrator(services.runtime.pool, 'orch-narrow', ['agent-2']);
    const narrowToken = await tasksToken(services, narrow);
    const refused = await post(valid, narrowToken);
    expect(refused.status).toBe(400);
    expect(refused.body.fields).toEqual([{ field: 'agent_id', message: expect.stringMatching(/may not/) }]);
    const mine = await createTask(services, world.orchestrator);
    const peek = await sendJson('GET', `${services.issuer}/v1/tasks/${mine.task_id}`, undefined, narrowToken);
    expect(peek.status).toBe(404);
    const end = await sendJson('POST', `${services.issuer}/v1/tasks/${mine.task_id}/complete`, undefined, narrowToken);
    expect(end.status).toBe(404);
  });

  it('requires a tasks token: none, garbage, an agent credential, a suspended orchestrator', async () => {
    expect((await post(valid, '')).status).toBe(401);
    const garbage = await post(valid, 'abc.def.ghi');
    expect(garbage.status).toBe(401);
    expect(garbage.headers.get('www-authenticate')).toMatch(/invalid_token/);
    const task = await createTask(services, world.orchestrator);
    const agentCredential = (await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).body.access_token;
    expect((await post(valid, agentCredential)).status).toBe(401);
    const other = await seedOrchestrator(services.runtime.pool, 'orch-suspended');
    const otherToken = await tasksToken(services, other);
    await services.runtime.pool.query(`UPDATE orchestrators SET status = 'suspended' WHERE id = 'orch-suspended'`);
    await retagRow(services.runtime.pool, services.runtime.rowIntegrity, 'orchestrators', 'orch-suspended');
    expect((await post(valid, otherToken)).status).toBe(401);
  });

  it('fails a task, revoking its credentials before answering', async () => {
    const task = await createTask(services, world.orchestrator);
    await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    const failed = await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/fail`, undefined, token);
    expect(failed.status).toBe(200);
    expect(failed.body.status).toBe('failed');
    expect(failed.body.grants.map((grant: { state: string }) => grant.state)).toEqual(['revoked']);
    const again = await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/complete`, undefined, token);
    expect(again.body.status).toBe('failed');
  });

  it('expires a task at its deadline: checked on use and swept in the background', async () => {
    const task = await createTask(services, world.orchestrator, { ttl_seconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const shown = await sendJson('GET', `${services.issuer}/v1/tasks/${task.task_id}`, undefined, token);
    expect(shown.body.status).toBe('expired');
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(exchanged.body.error).toBe('invalid_grant');
    const swept = await createTask(services, world.orchestrator, { ttl_seconds: 1 });
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await services.runtime.revoker.expireDueTasks()).toBeGreaterThanOrEqual(1);
    const { rows } = await services.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [swept.task_id]);
    expect(rows[0].status).toBe('expired');
    const events = await services.runtime.pool.query(`SELECT type FROM audit_events WHERE task_id = $1 ORDER BY seq`, [swept.task_id]);
    expect(events.rows.map((row) => row.type)).toEqual(['task.created', 'task.expired']);
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
