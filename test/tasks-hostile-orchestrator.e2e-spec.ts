import { SignJWT } from 'jose';
import { clientAuthFields } from '@writ/testing';
import { createTask, exchangeFields, startIdentityProvider, tasksToken, World, payoutEntry } from './support/grant-flow';
import { MockUpstream } from './support/mock-upstreams';
import { http, postForm, sendJson, tokenRequest } from './support/oauth-client';
import { seedAgent, seedOrchestrator } from './support/seed';
import { TestServices } from './support/test-services';
import { startTwoGateways, TwoGateways } from './support/two-gateways';

const SECRET = 'sk_live_hostile_orch_77';

/**
 * A careless or compromised orchestrator, and an agent racing it, against the Tasks API and the
 * budgets the gateway spends: each case attacks a claim of docs/tasks.md and docs/security.md.
 */
describe('Tasks API against a hostile orchestrator and a racing agent', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let token: string;

  let deployment: TwoGateways;

  beforeAll(async () => {
    deployment = await startTwoGateways(SECRET);
    ({ first, second, world, upstream } = deployment);
    token = await tasksToken(first, world.orchestrator);
  });
  afterAll(() => deployment.close());

  const declare = (body: Record<string, unknown>, bearer = token, services = first) =>
    sendJson(
      'POST',
      `${services.issuer}/v1/tasks`,
      { agent_id: 'agent-1', purpose: 'probe', ttl_seconds: 600, allowed: [payoutEntry(30000)], ...body },
      bearer,
    );
  const rawDeclare = (text: string) =>
    http(`${first.issuer}/v1/tasks`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: text });
  const fieldsOf = (body: { fields?: Array<{ field: string }> }) => (body.fields ?? []).map((entry) => entry.field);
  const taskCount = async () => Number((await first.runtime.pool.query('SELECT count(*) FROM tasks')).rows[0].count);
  const gatewayOf = (services: TestServices) => `http://127.0.0.1:${services.apps[services.apps.length - 1].getHttpServer().address().port}`;
  const pay = (base: string, credential: string, amount: number) =>
    http(`${base}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
      body: JSON.stringify({ destination: 'acct_1', amount, currency: 'usd' }),
    });
  const credential = async (taskToken: string, details: unknown) => {
    const response = await tokenRequest(first.issuer, world.agent, exchangeFields(taskToken, details));
    expect(response.status).toBe(200);
    return response.body.access_token as string;
  };

  it('declares only for the exact agent ids it lists: case, whitespace and look-alike variants are other agents', async () => {
    // A distinct agent whose id differs from a listed one only in case.
    await seedAgent(first.runtime.pool, 'Agent-1');
    const listed = await seedOrchestrator(first.runtime.pool, 'orch-exact', ['agent-1']);
    const listedToken = await tasksToken(first, listed);
    const before = await taskCount();
    for (const agentId of ['Agent-1', 'AGENT-1', 'agent-1 ', ' agent-1', 'agent\u20101', '\uff41gent-1', 'agent-1\u200b', 'agent-1\u0000']) {
      const refused = await declare({ agent_id: agentId }, listedToken);
      expect(refused.status).toBe(400);
      expect(fieldsOf(refused.body)).toContain('agent_id');
    }
    expect(await taskCount()).toBe(before);
    expect((await declare({}, listedToken)).status).toBe(201);
  });

  it('refuses limits that do not denote a positive amount exactly, and stores what it accepts exactly', async () => {
    const cases: Array<[unknown, string]> = [
      [{ calls: 1.5 }, 'allowed[0].limits.calls'],
      [{ calls: 0 }, 'allowed[0].limits.calls'],
      [{ calls: -1 }, 'allowed[0].limits.calls'],
      [{ calls: 1e21 }, 'allowed[0].limits.calls'],
      [{ calls: '3' }, 'allowed[0].limits.calls'],
      [{ calls: true }, 'allowed[0].limits.calls'],
      [{ sum: { amount_max: 0 } }, 'allowed[0].limits.sum.amount_max'],
      [{ sum: { amount_max: -30000 } }, 'allowed[0].limits.sum.amount_max'],
      [{ sum: { amount_max: 1e21 } }, 'allowed[0].limits.sum.amount_max'],
      [{ sum: { amount_max: '90000' } }, 'allowed[0].limits.sum.amount_max'],
      // Not numeric (eq), not declared by the entry, not bound by the operation at all.
      [{ sum: { destination: 10 } }, 'allowed[0].limits.sum.destination'],
      [{ sum: { currency: 10 } }, 'allowed[0].limits.sum.currency'],
      [{ sum: { amount: 10 } }, 'allowed[0].limits.sum.amount'],
      [{ sum: {} }, 'allowed[0].limits.sum'],
      [{ Calls: 3 }, 'allowed[0].limits.Calls'],
    ];
    const before = await taskCount();
    for (const [limits, field] of cases) {
      const refused = await declare({ allowed: [payoutEntry(30000, { limits })] });
      expect(refused.status).toBe(400);
      expect(fieldsOf(refused.body)).toContain(field);
    }
    // Texts a double cannot hold exactly are refused before anything is read.
    for (const amount of ['9007199254740993', '1e-400', '1e400']) {
      const text = `{"agent_id":"agent-1","purpose":"p","ttl_seconds":600,"allowed":[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"destination":"acct_1","amount_max":30000,"currency":"usd"},"limits":{"sum":{"amount_max":${amount}}}}]}`;
      expect((await rawDeclare(text)).status).toBe(400);
    }
    expect(await taskCount()).toBe(before);
    const accepted = await declare({ allowed: [payoutEntry(1, { limits: { calls: 1_000_000_000, sum: { amount_max: 1e-7 } } })] });
    expect(accepted.status).toBe(201);
    const { rows } = await first.runtime.pool.query(`SELECT rule, maximum::text AS maximum FROM task_budgets WHERE task_id = $1 ORDER BY rule`, [
      accepted.body.task_id,
    ]);
    expect(rows).toEqual([
      { rule: 'calls', maximum: '1000000000' },
      { rule: 'sum:amount_max', maximum: '0.0000001' },
    ]);
  });

  it('charges a call to the limited entry whichever overlapping unlimited entry (wider or narrower) also covers it', async () => {
    const task = await createTask(first, world.orchestrator, {
      allowed: [
        payoutEntry(30000, { limits: { calls: 2, sum: { amount_max: 30000 } } }),
        // Identical, unlimited; narrower, unlimited; the same with an explicit location.
        payoutEntry(30000),
        payoutEntry(100),
        payoutEntry(30000, { locations: [`${first.gatewayUrl}/connectors/payments`] }),
      ],
    });
    const before = upstream.received.length;
    const asked = [payoutEntry(100), payoutEntry(30000), { ...payoutEntry(50), constraints: { destination: 'acct_1', amount_max: 50, currency: 'usd' } }];
    const tokens = await Promise.all(asked.map((detail) => credential(task.task_token, [detail])));
    const { rows } = await first.runtime.pool.query(`SELECT budget_entries FROM access_tokens WHERE task_id = $1`, [task.task_id]);
    for (const row of rows) expect(row.budget_entries).toContain(0);
    // 100 + 29900 fill the sum; the third call (even 1) is refused whichever credential carries it.
    expect((await pay(first.gatewayUrl, tokens[0], 100)).status).toBe(201);
    expect((await pay(gatewayOf(second), tokens[1], 29900)).status).toBe(201);
    const third = await pay(first.gatewayUrl, tokens[2], 1);
    expect(third.status).toBe(403);
    expect(third.body.rule).toMatch(/^limit:/);
    expect(upstream.received.length).toBe(before + 2);
  });

  it('charges a located credential to the limited entry too: naming the connector in locations escapes no limit', async () => {
    const located = { locations: [`${first.gatewayUrl}/connectors/payments`] };
    // The limited entry names no location; an unlimited one allowing the same names the connector's.
    const task = await createTask(first, world.orchestrator, {
      allowed: [payoutEntry(30000, { limits: { calls: 1, sum: { amount_max: 30000 } } }), payoutEntry(30000, located)],
    });
    const before = upstream.received.length;
    expect((await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(30000)]), 30000)).status).toBe(201);
    const escaped = await credential(task.task_token, [payoutEntry(30000, located)]);
    const { rows } = await first.runtime.pool.query(`SELECT budget_entries FROM access_tokens WHERE task_id = $1 ORDER BY issued_at`, [task.task_id]);
    expect(rows.map((row) => row.budget_entries)).toEqual([[0], [0]]);
    const refused = await pay(gatewayOf(second), escaped, 30000);
    expect(refused.status).toBe(403);
    expect(refused.body.rule).toMatch(/^limit:/);
    expect(upstream.received.length).toBe(before + 1);
  });

  it('forwards no call whose use was decided after the end of its task, with calls and the end fired at once at two instances', async () => {
    for (const limits of [undefined, { calls: 100 }]) {
      const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000, limits ? { limits } : {})] });
      const tokens = await Promise.all(Array.from({ length: 16 }, () => credential(task.task_token, [payoutEntry(100)])));
      const calls = tokens.map((credential, n) => pay(n % 2 ? gatewayOf(second) : first.gatewayUrl, credential, 100));
      // Ended through the other authorization-server instance.
      const ended = await sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, token);
      expect(ended.status).toBe(200);
      expect(ended.body.status).toBe('completed');
      // Once the end has returned, no credential of the task works, on either instance.
      for (const [n, credential] of tokens.entries()) {
        const after = await pay(n % 2 ? first.gatewayUrl : gatewayOf(second), credential, 100);
        expect(after.status).toBe(401);
      }
      await Promise.all(calls);
      await first.runtime.audit.drain();
      await second.runtime.audit.drain();
      // Every forwarded call spent its use no later than the end: in an earlier transaction, or in
      // the end's own one (an instance's audit batch may carry both; its spends then run first,
      // though the chain lists the end's events first).
      const { rows } = await first.runtime.pool.query(
        `SELECT type, seq::int AS seq, xmin::text AS tx FROM audit_events
          WHERE task_id = $1 AND (type = 'task.completed' OR (type = 'gateway.call' AND outcome = 'success')) ORDER BY seq`,
        [task.task_id],
      );
      const end = rows.find((row) => row.type === 'task.completed');
      expect(end).toBeDefined();
      for (const call of rows.filter((row) => row.type === 'gateway.call' && row.seq > end.seq)) expect(call.tx).toBe(end.tx);
      const live = await first.runtime.pool.query(`SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1 AND revoked_at IS NULL`, [task.task_id]);
      expect(live.rows[0].n).toBe(0);
    }
  });

  it('never revives an ended task: fail after complete, a replayed Idempotency-Key, a revoked task token', async () => {
    const key = `revive-${Date.now()}`;
    const body = { agent_id: 'agent-1', purpose: 'revive', ttl_seconds: 600, allowed: [payoutEntry(30000)] };
    const keyed = () =>
      http(`${first.issuer}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
        body: JSON.stringify(body),
      });
    const created = await keyed();
    expect(created.status).toBe(201);
    const id = created.body.task_id;
    expect((await sendJson('POST', `${first.issuer}/v1/tasks/${id}/complete`, undefined, token)).body.status).toBe('completed');
    const failed = await sendJson('POST', `${first.issuer}/v1/tasks/${id}/fail`, undefined, token);
    expect(failed.status).toBe(200);
    expect(failed.body.status).toBe('completed');
    const replayed = await keyed();
    expect(replayed.status).toBe(201);
    expect(replayed.body).toMatchObject({ task_id: id, status: 'completed', expires_at: created.body.expires_at });
    // The reissued token is the task's: it gets nothing from an ended task, on either instance.
    for (const base of [first.authUrl, second.authUrl]) {
      const refused = await postForm(`${base}/oauth2/token`, {
        ...exchangeFields(replayed.body.task_token, [payoutEntry(100)]),
        ...(await clientAuthFields(world.agent.id, world.agent.key, first.issuer)),
      });
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe('invalid_grant');
    }
    // A longer ttl under the same key is another declaration: refused, nothing extended.
    const longer = await http(`${first.issuer}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
      body: JSON.stringify({ ...body, ttl_seconds: 86400 }),
    });
    expect(longer.status).toBe(409);
    const shown = await sendJson('GET', `${first.issuer}/v1/tasks/${id}`, undefined, token);
    expect(shown.body).toMatchObject({ status: 'completed', expires_at: created.body.expires_at });
  });

  it('keeps an Idempotency-Key to its orchestrator: another one with the same key and body declares its own task', async () => {
    const other = await seedOrchestrator(first.runtime.pool, 'orch-idem-other', ['agent-1']);
    const otherToken = await tasksToken(first, other);
    const key = `shared-${Date.now()}`;
    const send = (bearer: string) =>
      http(`${first.issuer}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}`, 'idempotency-key': key },
        body: JSON.stringify({ agent_id: 'agent-1', purpose: 'shared key', ttl_seconds: 600, allowed: [payoutEntry(30000)] }),
      });
    const mine = await send(token);
    const theirs = await send(otherToken);
    expect(mine.status).toBe(201);
    expect(theirs.status).toBe(201);
    expect(theirs.body.task_id).not.toBe(mine.body.task_id);
    expect((await sendJson('GET', `${first.issuer}/v1/tasks/${mine.body.task_id}`, undefined, otherToken)).status).toBe(404);
    expect((await sendJson('POST', `${first.issuer}/v1/tasks/${mine.body.task_id}/complete`, undefined, otherToken)).status).toBe(404);
    expect((await sendJson('GET', `${first.issuer}/v1/tasks/${mine.body.task_id}`, undefined, token)).body.status).toBe('active');
  });

  it('refuses user tokens that are expired, not yet valid, for another audience, from an untrusted issuer, or signed by another key or alg', async () => {
    const issuer = 'https://login.hostile.example';
    const provider = await startIdentityProvider(first.runtime.pool, issuer);
    const stranger = await startIdentityProvider(first.runtime.pool, 'https://stranger.example');
    try {
      const sign = (claims: { aud?: string; exp?: number | string; iss?: string }, key = provider.key) =>
        new SignJWT({ sub: 'user-1' })
          .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
          .setIssuer(claims.iss ?? issuer)
          .setAudience(claims.aud ?? 'writ')
          .setIssuedAt(Math.floor(Date.now() / 1000) - 3600)
          .setExpirationTime(claims.exp ?? '5m')
          .sign(key);
      const before = await taskCount();
      const bad = [
        await sign({ exp: Math.floor(Date.now() / 1000) - 60 }),
        await sign({ aud: 'another-app' }),
        await sign({ iss: 'https://unregistered.example' }),
        // Signed by the other provider's key, claiming this issuer.
        await sign({}, stranger.key),
        // HS256 with the provider's public key as the shared secret (algorithm confusion).
        await new SignJWT({ sub: 'user-1' })
          .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
          .setIssuer(issuer)
          .setAudience('writ')
          .setExpirationTime('5m')
          .sign(new TextEncoder().encode(JSON.stringify(provider.publicJwk))),
        // Not valid yet, and a key id the provider's key set does not have.
        await new SignJWT({ sub: 'user-1' })
          .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
          .setIssuer(issuer)
          .setAudience('writ')
          .setNotBefore('1h')
          .setExpirationTime('2h')
          .sign(provider.key),
        await new SignJWT({ sub: 'user-1' })
          .setProtectedHeader({ alg: 'ES256', kid: 'k2' })
          .setIssuer(issuer)
          .setAudience('writ')
          .setExpirationTime('5m')
          .sign(provider.key),
      ];
      for (const userToken of bad) {
        const refused = await declare({ user_token: userToken });
        expect(refused.status).toBe(400);
        expect(fieldsOf(refused.body)).toContain('user_token');
      }
      // Asserting a user without a token, from an orchestrator the provider does not list.
      const asserted = await declare({ user: { iss: issuer, sub: 'user-1' } });
      expect(asserted.status).toBe(400);
      expect(fieldsOf(asserted.body)).toContain('user');
      expect(await taskCount()).toBe(before);
      expect((await declare({ user_token: await sign({}) })).status).toBe(201);
      // Not spent: one token proves its user for a second task, and each task lives its own ttl, past the token's exp.
      const shortLived = await sign({ exp: Math.floor(Date.now() / 1000) + 30 });
      for (let n = 0; n < 2; n += 1) {
        const created = await declare({ user_token: shortLived, ttl_seconds: 86400 });
        expect(created.status).toBe(201);
        expect(Date.parse(created.body.expires_at)).toBeGreaterThan(Date.now() + 86000 * 1000);
        const shown = await sendJson('GET', `${first.issuer}/v1/tasks/${created.body.task_id}`, undefined, token);
        expect(shown.body.user).toEqual({ iss: issuer, sub: 'user-1' });
      }
    } finally {
      await provider.close();
      await stranger.close();
    }
  });

  it('names user and user_token sent as null, at task creation and for connect links, and creates nothing', async () => {
    const before = await taskCount();
    for (const member of ['user', 'user_token'] as const) {
      const refused = await declare({ [member]: null });
      expect(refused.status).toBe(400);
      expect(new Set(fieldsOf(refused.body))).toEqual(new Set([member]));
      const link = await sendJson('POST', `${first.issuer}/v1/connections/links`, { connector_id: 'payments', [member]: null }, token);
      expect(link.status).toBe(400);
      expect(new Set(fieldsOf(link.body))).toEqual(new Set([member]));
    }
    expect(await taskCount()).toBe(before);
  });

  it('shows no other task through the grants view, and no token in it', async () => {
    const mine = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000)] });
    const sibling = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000)] });
    const mineCredential = await credential(mine.task_token, [payoutEntry(100)]);
    await credential(sibling.task_token, [payoutEntry(100)]);
    const shown = await sendJson('GET', `${first.issuer}/v1/tasks/${mine.task_id}`, undefined, token);
    expect(shown.body.grants).toHaveLength(1);
    const { rows } = await first.runtime.pool.query(`SELECT jti FROM access_tokens WHERE task_id = $1 AND kind = 'connector'`, [mine.task_id]);
    expect(shown.body.grants[0].jti).toBe(rows[0].jti);
    expect(JSON.stringify(shown.body)).not.toContain(mineCredential);
    expect(JSON.stringify(shown.body)).not.toContain(mine.task_token);
    // The orchestrator's own Tasks API token cannot be turned against another orchestrator's task through revocation either.
    const revoke = await postForm(`${first.issuer}/oauth2/revoke`, { token: sibling.task_token });
    expect([400, 401]).toContain(revoke.status);
    expect((await sendJson('GET', `${first.issuer}/v1/tasks/${sibling.task_id}`, undefined, token)).body.status).toBe('active');
  });
});
