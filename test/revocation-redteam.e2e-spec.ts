import { Client } from 'pg';
import { clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { SweeperService } from '../apps/authorization-server/src/background/sweeper.service';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, requireApprovalAbove, seedWorld, tasksToken, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, sendJson, TestClient, TestResponse } from './support/oauth-client';
import { seedAgent, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_revocation_redteam_4f2a';
const PAYOUT = { destination: 'acct_1', amount: 42000, currency: 'usd' };

const jtiOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')).jti as string;

/**
 * Ending a task and RFC 7009 revocation, attacked: ends raced by exchanges and gateway calls on two
 * instances of one deployment, ends raced by ends, and the revocation endpoint's edges (unknown,
 * foreign, expired and malformed tokens, hints, repeated parameters, a database that does not answer).
 */
describe('revocation and task ends, red team', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let otherAgent: TestClient;
  let otherOrchestrator: TestClient;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    first = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    second = await startSecondInstance(first, { gateway: createGatewayApp });
    // Ends here are asked for: the sweep would race them.
    for (const services of [first, second]) services.apps[0].get(SweeperService).onApplicationShutdown();
    world = await seedWorld(first.runtime.pool, upstream.url);
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    otherAgent = await seedAgent(first.runtime.pool, 'agent-other');
    otherOrchestrator = await seedOrchestrator(first.runtime.pool, 'orch-other', ['*']);
  });
  afterAll(async () => {
    await second.close();
    await first.close();
    await upstream.close();
  });

  const instances = () => [first, second];
  const gatewayOf = (n: number) =>
    n % 2 ? `http://127.0.0.1:${second.apps[second.apps.length - 1].getHttpServer().address().port as number}` : first.gatewayUrl;
  const exchangeAt = async (n: number, taskToken: string) =>
    postForm(`${instances()[n % 2].authUrl}/oauth2/token`, {
      ...exchangeFields(taskToken, PAYOUT_REQUEST),
      ...(await clientAuthFields(world.agent.id, world.agent.key, first.issuer)),
    });
  const payAt = (n: number, token: string) =>
    http(`${gatewayOf(n)}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(PAYOUT),
    });
  const revokeAt = async (n: number, client: TestClient, fields: Record<string, string> | string) => {
    const auth = new URLSearchParams(await clientAuthFields(client.id, client.key, first.issuer)).toString();
    const body = typeof fields === 'string' ? `${fields}&${auth}` : `${new URLSearchParams(fields).toString()}&${auth}`;
    return postForm(`${instances()[n % 2].authUrl}/oauth2/revoke`, body);
  };
  const introspectAt = async (n: number, client: TestClient, token: string) =>
    postForm(`${instances()[n % 2].authUrl}/oauth2/introspect`, { token, ...(await clientAuthFields(client.id, client.key, first.issuer)) });
  const drain = async () => {
    for (const services of instances()) await services.runtime.audit.drain();
  };
  const chain = async (taskId: string) =>
    (
      await first.runtime.pool.query<{ seq: string; type: string; outcome: string; data: Record<string, unknown> }>(
        `SELECT seq, type, outcome, data FROM audit_events WHERE task_id = $1 ORDER BY seq`,
        [taskId],
      )
    ).rows;
  const credential = async (taskToken: string) => {
    const response = await exchangeAt(0, taskToken);
    if (response.status !== 200) throw new Error(`token exchange failed: ${response.text}`);
    return response.body.access_token as string;
  };
  const revokedAt = async (jti: string) =>
    (await first.runtime.pool.query<{ revoked_at: Date | null }>('SELECT revoked_at FROM access_tokens WHERE jti = $1', [jti])).rows[0]?.revoked_at;

  describe('an end raced by exchanges and gateway calls on two instances', () => {
    it.each(['complete', 'fail', 'admin-revoke', 'rfc7009'] as const)(
      'issues and forwards nothing after the end (%s), on either instance, and the chain says so',
      async (how) => {
        const task = await createTask(first, world.orchestrator);
        const bearer = await tasksToken(first, world.orchestrator);
        const held = await Promise.all(Array.from({ length: 4 }, () => credential(task.task_token)));
        const endCall = (): Promise<TestResponse> => {
          switch (how) {
            case 'complete':
            case 'fail':
              return sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/${how}`, undefined, bearer);
            case 'admin-revoke':
              return sendJson('POST', `${first.adminUrl}/v1/tasks/${task.task_id}/revoke`, { reason: 'red team' }, first.adminToken);
            case 'rfc7009':
              return revokeAt(1, world.agent, { token: task.task_token });
          }
        };
        const racing = Promise.all([
          ...Array.from({ length: 16 }, (_, n) => exchangeAt(n, task.task_token)),
          ...Array.from({ length: 16 }, (_, n) => payAt(n, held[n % held.length])),
        ]);
        const ended = await endCall();
        expect(ended.status).toBe(200);
        const raced = await racing;
        for (const response of raced) expect([200, 201, 400, 401]).toContain(response.status);

        // After the end returned: nothing on either instance.
        const after = await Promise.all([
          ...[0, 1].map((n) => exchangeAt(n, task.task_token)),
          ...[0, 1].flatMap((n) => held.map((token) => payAt(n, token))),
          ...[0, 1].flatMap((n) => raced.filter((response) => response.body?.access_token).map((response) => payAt(n, response.body.access_token as string))),
        ]);
        for (const response of after.slice(0, 2)) expect([response.status, response.body.error]).toEqual([400, 'invalid_grant']);
        for (const response of after.slice(2)) expect(response.status).toBe(401);
        // Introspection on both instances: every credential and the task token inactive.
        const issued = [...held, ...raced.filter((response) => response.body?.access_token).map((response) => response.body.access_token as string)];
        for (const n of [0, 1]) {
          for (const token of [...issued, task.task_token]) expect((await introspectAt(n, world.agent, token)).body).toEqual({ active: false });
        }
        const live = await first.runtime.pool.query('SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1 AND revoked_at IS NULL', [task.task_id]);
        expect(live.rows[0].n).toBe(0);

        // The chain: one end; no issuance and no allowed call after it.
        await drain();
        const events = await chain(task.task_id);
        const ends = events.filter((event) => /^task\.(completed|failed|revoked|expired)$/.test(event.type));
        expect(ends).toHaveLength(1);
        const endSeq = Number(ends[0].seq);
        const late = events.filter(
          (event) => Number(event.seq) > endSeq && (event.type === 'token.issued' || (event.type === 'gateway.call' && event.outcome === 'success')),
        );
        expect(late).toEqual([]);
        // The agent's exchanges after the end are in the task's evidence: refused, naming why.
        const refusedAfter = events.filter((event) => Number(event.seq) > endSeq && event.type === 'token.refused');
        expect(refusedAfter.length).toBeGreaterThanOrEqual(2);
        for (const event of refusedAfter) expect(event.data).toMatchObject({ error: 'invalid_grant' });
        expect(refusedAfter.map((event) => event.data.reason)).toContain('task_ended');
        // Every credential a client received has its issuance event, before the end.
        const issuedJtis = new Set(events.filter((event) => event.type === 'token.issued').map((event) => event.data.jti));
        for (const token of issued) expect(issuedJtis.has(jtiOf(token))).toBe(true);
        // Every credential of the task is listed revoked by the end (or was revoked before).
        const revokedJtis = new Set(events.filter((event) => event.type === 'token.revoked').flatMap((event) => event.data.jtis as string[]));
        for (const token of issued) expect(revokedJtis.has(jtiOf(token))).toBe(true);
        expect(await first.runtime.audit.verify()).toMatchObject({ valid: true });
      },
      60_000,
    );
  });

  describe('an end raced by ends', () => {
    it('ends once when the same end is asked for 10 times at once on both instances; every answer is 200 with the task ended', async () => {
      const task = await createTask(first, world.orchestrator);
      const bearer = await tasksToken(first, world.orchestrator);
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, n) => sendJson('POST', `${instances()[n % 2].authUrl}/v1/tasks/${task.task_id}/complete`, undefined, bearer)),
      );
      for (const answer of answers) expect([answer.status, answer.body.status]).toEqual([200, 'completed']);
      await drain();
      const ends = (await chain(task.task_id)).filter((event) => event.type === 'task.completed');
      expect(ends).toHaveLength(1);
    });

    it('ends once when RFC 7009 revocations of the task token race on both instances', async () => {
      const task = await createTask(first, world.orchestrator);
      const answers = await Promise.all(Array.from({ length: 8 }, (_, n) => revokeAt(n, n % 4 ? world.agent : world.orchestrator, { token: task.task_token })));
      for (const answer of answers) expect([answer.status, answer.text]).toEqual([200, '']);
      await drain();
      expect((await chain(task.task_id)).filter((event) => event.type === 'task.revoked')).toHaveLength(1);
    });
  });

  describe('revocation by client and by connector, raced on two instances', () => {
    it.each(['suspend-agent', 'delete-connector'] as const)(
      'issues and allows nothing after the admin change answers (%s)',
      async (how) => {
        const agent = await seedAgent(first.runtime.pool, `agent-${how}`);
        const connectorId = `payments-${how}`;
        const { rows } = await first.runtime.pool.query(`SELECT operations FROM connectors WHERE id = 'payments'`);
        const registered = await sendJson(
          'POST',
          `${first.adminUrl}/v1/connectors`,
          { id: connectorId, name: connectorId, base_url: upstream.url, credential: { type: 'bearer', token: SECRET }, operations: rows[0].operations },
          first.adminToken,
        );
        expect(registered.status).toBe(201);
        const details = PAYOUT_REQUEST.map((entry) => ({ ...entry, connector: connectorId }));
        const task = await createTask(first, otherOrchestrator, { agent_id: agent.id, allowed: details });
        const exchange = async (n: number) =>
          postForm(`${instances()[n % 2].authUrl}/oauth2/token`, {
            ...exchangeFields(task.task_token, details),
            ...(await clientAuthFields(agent.id, agent.key, first.issuer)),
          });
        const pay = (n: number, token: string) =>
          http(`${gatewayOf(n)}/connectors/${connectorId}/v1/payouts`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify(PAYOUT),
          });
        const held = await Promise.all(
          [0, 1, 2, 3].map(async (n) => {
            const response = await exchange(n);
            expect(response.status).toBe(200);
            return response.body.access_token as string;
          }),
        );
        const racing = Promise.all([
          ...Array.from({ length: 12 }, (_, n) => exchange(n)),
          ...Array.from({ length: 12 }, (_, n) => pay(n, held[n % held.length])),
        ]);
        const changed =
          how === 'suspend-agent'
            ? await sendJson('PATCH', `${first.adminUrl}/v1/agents/${agent.id}`, { status: 'suspended' }, first.adminToken)
            : await sendJson('DELETE', `${first.adminUrl}/v1/connectors/${connectorId}`, undefined, first.adminToken);
        expect(changed.status).toBeLessThan(300);
        const raced = await racing;
        const issued = [...held, ...raced.filter((response) => response.body?.access_token).map((response) => response.body.access_token as string)];
        const after = await Promise.all([...[0, 1].map((n) => exchange(n)), ...[0, 1].flatMap((n) => issued.map((token) => pay(n, token)))]);
        for (const response of after.slice(0, 2)) expect(response.status).toBeGreaterThanOrEqual(400);
        for (const response of after.slice(2)) expect(response.status).toBe(401);
        for (const token of issued) expect((await introspectAt(1, otherOrchestrator, token)).body).toEqual({ active: false });
        const live = await first.runtime.pool.query(
          'SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1 AND revoked_at IS NULL AND expires_at > now()',
          [task.task_id],
        );
        expect(live.rows[0].n).toBe(0);
        // In chain order: no issuance and no allowed call after the change.
        await drain();
        const { rows: events } = await first.runtime.pool.query<{ seq: string; type: string; outcome: string; task_id: string | null }>(
          `SELECT seq, type, outcome, task_id FROM audit_events WHERE seq > (SELECT min(seq) FROM audit_events WHERE task_id = $1) ORDER BY seq`,
          [task.task_id],
        );
        const marker = how === 'suspend-agent' ? 'admin.agent.suspended' : 'admin.connector.deleted';
        const changeSeq = Number(events.find((event) => event.type === marker)!.seq);
        const late = events.filter(
          (event) =>
            event.task_id === task.task_id &&
            Number(event.seq) > changeSeq &&
            (event.type === 'token.issued' || (event.type === 'gateway.call' && event.outcome === 'success')),
        );
        expect(late).toEqual([]);
      },
      60_000,
    );
  });

  describe('an end asked for by someone else', () => {
    it("answers another orchestrator's complete or fail 404 on both instances, and nothing ends", async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      const stranger = await tasksToken(first, otherOrchestrator);
      const answers = await Promise.all(
        [first, second].flatMap((services) =>
          ['complete', 'fail'].map((how) => sendJson('POST', `${services.authUrl}/v1/tasks/${task.task_id}/${how}`, undefined, stranger)),
        ),
      );
      for (const answer of answers) expect(answer.status).toBe(404);
      // The task token does not stand in for a Tasks API token.
      expect((await sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, task.task_token)).status).toBe(401);
      expect((await first.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [task.task_id])).rows[0].status).toBe('active');
      expect((await payAt(1, token)).status).toBe(201);
    });
  });

  describe('an end raced by the deadline', () => {
    it('ends a task past its deadline once, as expired, when sweeps on both instances race ends and exchanges', async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      const bearer = await tasksToken(first, world.orchestrator);
      // The deadline passes (the database clock decides), and no sweep has run yet.
      await first.runtime.pool.query(`UPDATE tasks SET expires_at = now() - interval '1 millisecond' WHERE id = $1`, [task.task_id]);
      const [sweptFirst, sweptSecond, ...answers] = await Promise.all([
        first.runtime.revoker.expireDueTasks(),
        second.runtime.revoker.expireDueTasks(),
        sendJson('POST', `${first.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, bearer),
        sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/fail`, undefined, bearer),
        sendJson('POST', `${first.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, first.adminToken),
        revokeAt(1, world.agent, { token: task.task_token }),
        exchangeAt(0, task.task_token),
        exchangeAt(1, task.task_token),
        payAt(0, token),
        payAt(1, token),
      ]);
      expect(sweptFirst + sweptSecond).toBeLessThanOrEqual(1);
      for (const answer of answers.slice(0, 3)) expect([answer.status, answer.body.status]).toEqual([200, 'expired']);
      expect(answers[3].status).toBe(200);
      for (const answer of answers.slice(4, 6)) expect([answer.status, answer.body.error]).toEqual([400, 'invalid_grant']);
      for (const answer of answers.slice(6)) expect(answer.status).toBe(401);
      await drain();
      const events = await chain(task.task_id);
      const ends = events.filter((event) => /^task\.(completed|failed|revoked|expired)$/.test(event.type));
      expect(ends.map((event) => event.type)).toEqual(['task.expired']);
      expect(events.filter((event) => event.type === 'token.issued')).toHaveLength(1);
      expect(events.filter((event) => event.type === 'gateway.call' && event.outcome === 'success')).toEqual([]);
      expect((await first.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [task.task_id])).rows[0].status).toBe('expired');
    });
  });

  describe('RFC 7009 of one credential or of a Tasks API token', () => {
    it('allows no call after an RFC 7009 revocation of one credential that raced calls on both gateways', async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      const racing = Promise.all(Array.from({ length: 16 }, (_, n) => payAt(n, token)));
      const revoked = await revokeAt(1, world.agent, { token });
      expect([revoked.status, revoked.text]).toEqual([200, '']);
      for (const response of await racing) expect([201, 401]).toContain(response.status);
      for (const n of [0, 1]) {
        expect((await payAt(n, token)).status).toBe(401);
        expect((await introspectAt(n, world.agent, token)).body).toEqual({ active: false });
      }
      await drain();
      const events = await chain(task.task_id);
      const revokedSeq = Number(events.find((event) => event.type === 'token.revoked')!.seq);
      const late = events.filter((event) => event.type === 'gateway.call' && event.outcome === 'success' && Number(event.seq) > revokedSeq);
      expect(late).toEqual([]);
      // The task goes on: its task token still buys a credential.
      expect((await exchangeAt(0, task.task_token)).status).toBe(200);
    });

    it("revokes an orchestrator's own Tasks API token (a 401 on both instances), and no one else's", async () => {
      const bearer = await tasksToken(first, world.orchestrator);
      const foreign = await revokeAt(0, otherOrchestrator, { token: bearer });
      const byAgent = await revokeAt(1, world.agent, { token: bearer });
      for (const answer of [foreign, byAgent]) expect([answer.status, answer.text]).toEqual([200, '']);
      const task = await sendJson('POST', `${second.authUrl}/v1/tasks`, { agent_id: 'agent-1', purpose: 'p', allowed: [], ttl_seconds: 60 }, bearer);
      expect(task.status).not.toBe(401);
      expect((await revokeAt(1, world.orchestrator, { token: bearer })).status).toBe(200);
      for (const services of instances()) {
        const answer = await sendJson('GET', `${services.authUrl}/v1/tasks/00000000-0000-4000-8000-000000000000`, undefined, bearer);
        expect(answer.status).toBe(401);
      }
    });
  });

  describe('RFC 7009 edges', () => {
    it('refuses an admin revocation reason that is not well-formed text (a lone surrogate), naming it, and the chain stays valid', async () => {
      const task = await createTask(first, world.orchestrator);
      const answer = await http(`${first.adminUrl}/v1/tasks/${task.task_id}/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${first.adminToken}` },
        body: '{"reason":"stop \\ud800 now"}',
      });
      expect(answer.status).toBe(400);
      expect(JSON.stringify(answer.body)).toMatch(/reason/);
      expect((await first.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [task.task_id])).rows[0].status).toBe('active');
      await drain();
      expect(await first.runtime.audit.verify()).toMatchObject({ valid: true });
    });

    it('answers 200 with an empty body for an unknown or unverifiable token, and changes nothing', async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      const [header, payload] = token.split('.');
      const variants = [
        'not-a-token',
        `${header}.${payload}.AAAA`,
        `${header}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), jti: 'x' })).toString('base64url')}.${token.split('.')[2]}`,
        'a'.repeat(6000),
        '__proto__',
        'constructor',
      ];
      for (const variant of variants) {
        const answer = await revokeAt(0, world.agent, { token: variant });
        expect([answer.status, answer.text, answer.headers.get('cache-control')]).toEqual([200, '', 'no-store']);
      }
      expect(await revokedAt(jtiOf(token))).toBeNull();
      expect((await introspectAt(1, world.agent, token)).body.active).toBe(true);
    });

    it('answers a lone surrogate, a huge body, or a __proto__ parameter as the form rules say, never 500', async () => {
      // A surrogate encoded in UTF-8 is not UTF-8: refused, never decoded to U+FFFD and looked up.
      const lone = await revokeAt(0, world.agent, 'token=%ED%A0%80abc');
      expect([lone.status, lone.body.error]).toEqual([400, 'invalid_request']);
      const proto = await revokeAt(0, world.agent, '__proto__=x&token=abc');
      expect([200, 400]).toContain(proto.status);
      const protoToken = await revokeAt(0, world.agent, 'token[__proto__]=abc');
      expect([400]).toContain(protoToken.status);
      const huge = await revokeAt(0, world.agent, { token: 'a'.repeat(2_000_000) });
      expect([400, 413]).toContain(huge.status);
      for (const answer of [lone, proto, protoToken, huge]) expect(answer.status).toBeLessThan(500);
    });

    it('refuses a repeated token or token_type_hint (400 invalid_request) and revokes nothing', async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      const twice = await revokeAt(0, world.agent, `token=${token}&token=${token}`);
      expect([twice.status, twice.body.error]).toEqual([400, 'invalid_request']);
      const hints = await revokeAt(0, world.agent, `token=${token}&token_type_hint=access_token&token_type_hint=refresh_token`);
      expect([hints.status, hints.body.error]).toEqual([400, 'invalid_request']);
      expect(await revokedAt(jtiOf(token))).toBeNull();
    });

    it('revokes whatever the hint says (wrong or unknown hints are ignored, RFC 7009 section 2.1)', async () => {
      for (const hint of ['refresh_token', 'access_token', 'urn:x:unknown', '']) {
        const task = await createTask(first, world.orchestrator);
        const token = await credential(task.task_token);
        const answer = await revokeAt(0, world.agent, { token, token_type_hint: hint });
        expect([answer.status, answer.text]).toEqual([200, '']);
        expect(await revokedAt(jtiOf(token))).not.toBeNull();
        expect((await payAt(1, token)).status).toBe(401);
      }
      // A task token with an access_token hint still ends its task.
      const task = await createTask(first, world.orchestrator);
      expect((await revokeAt(1, world.agent, { token: task.task_token, token_type_hint: 'access_token' })).status).toBe(200);
      expect((await first.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [task.task_id])).rows[0].status).toBe('revoked');
    });

    it("leaves another client's token alone and answers exactly as for an unknown token", async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      const foreign = await revokeAt(0, otherAgent, { token });
      const foreignOrchestrator = await revokeAt(1, otherOrchestrator, { token });
      const foreignTaskToken = await revokeAt(1, otherAgent, { token: task.task_token });
      // Another agent presenting the task token to the token endpoint: refused, and the task's evidence shows it.
      const stolen = await postForm(`${second.authUrl}/oauth2/token`, {
        ...exchangeFields(task.task_token, PAYOUT_REQUEST),
        ...(await clientAuthFields(otherAgent.id, otherAgent.key, first.issuer)),
      });
      expect([stolen.status, stolen.body.error]).toEqual([400, 'invalid_grant']);
      const unknown = await revokeAt(0, otherAgent, { token: 'not-a-token' });
      for (const answer of [foreign, foreignOrchestrator, foreignTaskToken, unknown]) {
        expect([answer.status, answer.text, answer.headers.get('content-type'), answer.headers.get('cache-control')]).toEqual([
          unknown.status,
          unknown.text,
          unknown.headers.get('content-type'),
          unknown.headers.get('cache-control'),
        ]);
      }
      expect(await revokedAt(jtiOf(token))).toBeNull();
      expect((await first.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [task.task_id])).rows[0].status).toBe('active');
      await drain();
      const evidence = await chain(task.task_id);
      expect(evidence.map((event) => event.type)).not.toContain('token.revoked');
      expect(evidence.filter((event) => event.type === 'token.refused').map((event) => event.data.reason)).toEqual(['task_of_another_agent']);
      expect((await payAt(1, token)).status).toBe(201);
    });

    it('revokes a connector credential without ending its task; the task token then still buys one', async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      expect((await revokeAt(1, world.orchestrator, { token })).status).toBe(200);
      expect((await payAt(0, token)).status).toBe(401);
      expect((await introspectAt(0, world.orchestrator, token)).body).toEqual({ active: false });
      expect((await first.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [task.task_id])).rows[0].status).toBe('active');
      expect((await exchangeAt(1, task.task_token)).status).toBe(200);
      // Revoking it again changes nothing and records nothing more.
      expect((await revokeAt(0, world.agent, { token })).status).toBe(200);
      await drain();
      expect((await chain(task.task_id)).filter((event) => event.type === 'token.revoked')).toHaveLength(1);
    });

    it('answers 200 for an already expired credential, and records nothing', async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      await first.runtime.pool.query(`UPDATE access_tokens SET expires_at = now() - interval '1 second' WHERE jti = $1`, [jtiOf(token)]);
      expect((await revokeAt(0, world.agent, { token })).status).toBe(200);
      await drain();
      expect((await chain(task.task_id)).filter((event) => event.type === 'token.revoked').length).toBeLessThanOrEqual(1);
    });
  });

  describe('a database that does not answer', () => {
    it('answers a revocation that cannot commit 503 with Retry-After, and nothing is revoked', async () => {
      const task = await createTask(first, world.orchestrator);
      const token = await credential(task.task_token);
      const bearer = await tasksToken(first, world.orchestrator);
      // The chain head is held: every audited write waits for it and times out.
      const holder = new Client({ connectionString: first.db.url });
      await holder.connect();
      let answers: TestResponse[];
      try {
        await holder.query('BEGIN');
        await holder.query('SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE');
        answers = await Promise.all([
          revokeAt(0, world.agent, { token }),
          revokeAt(1, world.agent, { token: task.task_token }),
          sendJson('POST', `${first.adminUrl}/v1/tasks/${task.task_id}/revoke`, {}, first.adminToken),
          sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, bearer),
          sendJson('POST', `${first.authUrl}/v1/tasks/${task.task_id}/fail`, undefined, bearer),
        ]);
      } finally {
        await holder.query('ROLLBACK');
        await holder.end();
      }
      for (const answer of answers) {
        expect(answer.status).toBe(503);
        expect(answer.headers.get('retry-after')).not.toBeNull();
      }
      expect(await revokedAt(jtiOf(token))).toBeNull();
      expect((await first.runtime.pool.query('SELECT status FROM tasks WHERE id = $1', [task.task_id])).rows[0].status).toBe('active');
      expect((await payAt(1, token)).status).toBe(201);
    });
  });

  // Last: the approval threshold stays for the rest of the suite.
  describe('an end while an approval is pending', () => {
    beforeAll(async () => {
      for (const services of instances()) await requireApprovalAbove(services, 10000);
    });

    it.each(['approve-after', 'approve-racing'] as const)('never mints a credential on the approval once the task ended (%s)', async (mode) => {
      const task = await createTask(first, world.orchestrator);
      const pending = await exchangeAt(0, task.task_token);
      expect(pending.body.error).toBe('authorization_pending');
      const id: string = pending.body.approval_id;
      const approve = () => sendJson('POST', `${first.adminUrl}/v1/approvals/${id}/approve`, {}, first.adminToken);
      const bearer = await tasksToken(first, world.orchestrator);
      const end = () => sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, bearer);
      if (mode === 'approve-after') {
        expect((await end()).status).toBe(200);
        const approved = await approve();
        expect(approved.status).toBeLessThan(500);
        if (approved.status === 200) expect(approved.body.status).toBe('expired');
      } else {
        const [ended] = await Promise.all([end(), approve()]);
        expect(ended.status).toBe(200);
      }
      const uses = await Promise.all(
        Array.from({ length: 4 }, async (_, n) =>
          postForm(`${instances()[n % 2].authUrl}/oauth2/token`, {
            ...exchangeFields(task.task_token, PAYOUT_REQUEST, { approval_id: id }),
            ...(await clientAuthFields(world.agent.id, world.agent.key, first.issuer)),
          }),
        ),
      );
      for (const use of uses) expect([use.status, use.body.error]).toEqual([400, 'invalid_grant']);
      const minted = await first.runtime.pool.query('SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1', [task.task_id]);
      expect(minted.rows[0].n).toBe(0);
      const approval = await sendJson('GET', `${first.adminUrl}/v1/approvals/${id}`, undefined, first.adminToken);
      expect(approval.body.status).toBe('expired');
    });
  });
});
