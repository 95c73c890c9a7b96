import { decodeJwt } from 'jose';
import { z } from 'zod';
import {
  AccessDeniedError,
  Agent,
  ApprovalTimeoutError,
  GatewayPathError,
  InvalidClientError,
  InvalidGrantError,
  Orchestrator,
  PolicyRefusalError,
  type PendingApproval,
  type TaskSpec,
} from '@writ/sdk';
import { ToolRefusalError, writTool } from '@writ/sdk/ai';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { sendJson } from './support/oauth-client';
import { setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_sdk_ts_5e1d';

const payout = (amountMax: number, destination = 'acct_1') => ({
  connector: 'payments',
  action: 'payouts.create',
  constraints: { destination, amount_max: amountMax, currency: 'usd' },
});

/**
 * The TypeScript SDK against a running Writ (authorization server, gateway, admin API, a mock
 * payments upstream): what an orchestrator and an agent do with it, and what it refuses.
 */
describe('@writ/sdk against a running Writ', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let orchestrator: Orchestrator;
  const calls: string[] = [];

  /** A fetch that records what the SDK sends where (method and path). */
  const recordingFetch: typeof fetch = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    calls.push(`${init?.method ?? 'GET'} ${url.port === new URL(services.gatewayUrl).port ? 'gateway' : 'auth'}${url.pathname}`);
    return fetch(input, init);
  };
  const agentOf = (options: { dpop?: boolean; approvalTimeoutMs?: number } = {}) =>
    new Agent({
      issuer: services.issuer,
      gatewayUrl: services.gatewayUrl,
      clientId: world.agent.id,
      key: { privateKey: world.agent.key.privateKey, kid: world.agent.key.publicJwk.kid },
      fetch: recordingFetch,
      allowInsecureRequests: true,
      ...options,
    });
  const spec = (overrides: Partial<TaskSpec> = {}): TaskSpec => ({
    agentId: world.agent.id,
    purpose: 'pay invoice INV-42 to Acme',
    allowed: [
      { connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 200000, currency: 'usd' } },
      { connector: 'payments', actions: ['payouts.get'] },
    ],
    ttlSeconds: 600,
    ...overrides,
  });
  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);
  const tokenCalls = () => calls.filter((call) => call === 'POST auth/oauth2/token').length;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    // Policy data (as an operator would set it): payouts above 1 000.00 USD need a human.
    await requireApprovalAbove(services, 100000);
    orchestrator = new Orchestrator({
      issuer: services.issuer,
      clientId: world.orchestrator.id,
      key: { privateKey: world.orchestrator.key.privateKey, kid: world.orchestrator.key.publicJwk.kid },
      allowInsecureRequests: true,
    });
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });
  beforeEach(() => {
    calls.length = 0;
  });

  describe('Orchestrator', () => {
    it('declares a task once when its answer is lost and the SDK retries (one Idempotency-Key per declaration)', async () => {
      const keys: string[] = [];
      let lost = false;
      // A proxy in front that lost the first answer after the server committed: it says 503.
      const flaky = new Orchestrator({
        issuer: services.issuer,
        clientId: world.orchestrator.id,
        key: { privateKey: world.orchestrator.key.privateKey, kid: world.orchestrator.key.publicJwk.kid },
        allowInsecureRequests: true,
        fetch: async (input, init) => {
          const answer = await fetch(input, init);
          const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
          if (!url.endsWith('/v1/tasks') || init?.method !== 'POST') return answer;
          keys.push(new Headers(init.headers).get('idempotency-key') ?? '');
          if (lost) return answer;
          lost = true;
          await answer.arrayBuffer();
          return new Response(JSON.stringify({ error: 'temporarily_unavailable' }), { status: 503, headers: { 'retry-after': '1' } });
        },
      });
      const task = await flaky.tasks.create(spec());
      expect(keys).toHaveLength(2);
      expect(keys[0]).toMatch(/^[0-9a-f-]{36}$/);
      expect(keys[1]).toBe(keys[0]);
      const { rows } = await services.runtime.pool.query(`SELECT id FROM tasks WHERE idempotency_key = $1`, [keys[0]]);
      expect(rows).toEqual([{ id: task.taskId }]);
      // A new declaration is a new key.
      await flaky.tasks.create(spec());
      expect(keys[2]).not.toBe(keys[0]);
    });

    it('creates, reads and completes a task; completion revokes what the agent holds', async () => {
      const task = await orchestrator.tasks.create(spec());
      expect(task).toMatchObject({ taskId: expect.any(String), taskToken: expect.any(String), status: 'active' });
      const agent = agentOf({ dpop: false });
      const credential = await agent.credential(task.taskToken, { connector: 'payments', action: 'payouts.get' });
      expect((await orchestrator.tasks.get(task.taskId)).status).toBe('active');
      expect((await orchestrator.tasks.complete(task.taskId)).status).toBe('completed');
      const after = await fetch(`${services.gatewayUrl}/connectors/payments/v1/payouts/po_1`, {
        headers: { authorization: `Bearer ${credential.accessToken}` },
      });
      expect(after.status).toBe(401);
    });

    it('runTask completes the task when the work returns', async () => {
      let taskId = '';
      const result = await orchestrator.runTask(spec(), async (task) => {
        taskId = task.taskId;
        const paid = await agentOf().fetch(task.taskToken, payout(42000), '/v1/payouts', { json: { destination: 'acct_1', amount: 42000, currency: 'usd' } });
        return (await paid.json()) as { id: string };
      });
      expect(result.id).toMatch(/^po_/);
      expect((await orchestrator.tasks.get(taskId)).status).toBe('completed');
    });

    it('runTask fails the task, revoking its credentials, when the work throws', async () => {
      const agent = agentOf({ dpop: false });
      let held = '';
      let taskId = '';
      const run = orchestrator.runTask(spec(), async (task) => {
        taskId = task.taskId;
        held = (await agent.credential(task.taskToken, { connector: 'payments', action: 'payouts.get' })).accessToken;
        const live = await fetch(`${services.gatewayUrl}/connectors/payments/v1/balance`, { headers: { authorization: `Bearer ${held}` } });
        expect(live.status).toBe(403); // a live credential, outside its operation
        throw new Error('the model went off the rails');
      });
      await expect(run).rejects.toThrow('the model went off the rails');
      const task = await orchestrator.tasks.get(taskId);
      expect(task.status).toBe('failed');
      const revoked = await fetch(`${services.gatewayUrl}/connectors/payments/v1/payouts/po_1`, { headers: { authorization: `Bearer ${held}` } });
      expect(revoked.status).toBe(401);
      expect(revoked.headers.get('www-authenticate')).toMatch(/invalid_token/);
    });

    it('runTask fails the task at once when aborted, while the work is still running', async () => {
      const controller = new AbortController();
      let taskId = '';
      let release!: () => void;
      const stuck = new Promise<void>((resolve) => (release = resolve));
      const run = orchestrator.runTask(
        spec(),
        async (task, signal) => {
          taskId = task.taskId;
          controller.abort(new Error('operator pressed stop'));
          await stuck;
          return signal.aborted;
        },
        { signal: controller.signal },
      );
      await expect(run).rejects.toThrow('operator pressed stop');
      expect((await orchestrator.tasks.get(taskId)).status).toBe('failed');
      release();
    });
  });

  describe('Agent', () => {
    it('exchanges a task token for exactly the requested operation, and caches it per exact request', async () => {
      const task = await orchestrator.tasks.create(spec());
      const agent = agentOf();
      const [first, concurrent] = await Promise.all([agent.credential(task.taskToken, payout(42000)), agent.credential(task.taskToken, payout(42000))]);
      expect(concurrent.accessToken).toBe(first.accessToken);
      expect(tokenCalls()).toBe(1); // concurrent identical requests share one exchange
      expect(first.tokenType).toBe('DPoP');
      expect(first.authorizationDetails).toEqual([
        { type: 'connector', ...{ connector: 'payments', actions: ['payouts.create'], constraints: payout(42000).constraints } },
      ]);
      const claims = decodeJwt(first.accessToken);
      expect(claims).toMatchObject({ aud: `${services.gatewayUrl}/connectors/payments`, task_id: task.taskId, cnf: { jkt: await agent.dpopThumbprint() } });
      expect((await agent.credential(task.taskToken, payout(42000))).accessToken).toBe(first.accessToken);
      const other = await agent.credential(task.taskToken, payout(41000));
      expect(other.accessToken).not.toBe(first.accessToken);
    });

    it('calls through the gateway with a DPoP-bound credential and a fresh proof per call', async () => {
      const task = await orchestrator.tasks.create(spec());
      const agent = agentOf().forTask(task.taskToken);
      const body = { destination: 'acct_1', amount: 42000, currency: 'usd' };
      const paid = await agent.fetch(payout(42000), '/v1/payouts', { json: body });
      expect(paid.status).toBe(201);
      const forwarded = upstream.received[upstream.received.length - 1];
      expect(forwarded.headers.authorization).toBe(`Bearer ${SECRET}`);
      expect(forwarded.headers.dpop).toBeUndefined();
      // The payout credential is one use: the second payout is refused by the gateway (401,
      // nothing forwarded), so the SDK drops it and exchanges again, once.
      calls.length = 0;
      const again = await agent.fetch(payout(42000), '/v1/payouts', { json: body });
      expect(again.status).toBe(201);
      expect(calls).toEqual(['POST gateway/connectors/payments/v1/payouts', 'POST auth/oauth2/token', 'POST gateway/connectors/payments/v1/payouts']);
      const { id } = (await again.json()) as { id: string };
      const read = await agent.fetch({ connector: 'payments', action: 'payouts.get' }, `/v1/payouts/${id}`);
      expect(read.status).toBe(200);
      // The gateway's own refusals come back as answers: the credential does not cover another payee.
      const outside = await agent.fetch(payout(42000), '/v1/payouts', { json: { ...body, destination: 'acct_2' } });
      expect(outside.status).toBe(403);
      expect(await outside.json()).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:destination' });
    });

    it('sends concurrent identical payouts once each: every call the one-use credential was refused to gets its own', async () => {
      const task = await orchestrator.tasks.create(spec());
      const agent = agentOf().forTask(task.taskToken);
      const body = { destination: 'acct_1', amount: 42000, currency: 'usd' };
      const paid = await Promise.all([1, 2, 3].map(() => agent.fetch(payout(42000), '/v1/payouts', { json: body })));
      expect(paid.map((answer) => answer.status)).toEqual([201, 201, 201]);
    });

    it('never sends a credential to a target outside the connector', async () => {
      const task = await orchestrator.tasks.create(spec());
      const agent = agentOf().forTask(task.taskToken);
      const read = { connector: 'payments', action: 'payouts.get' };
      for (const path of [
        'https://evil.example/v1/payouts/po_1',
        'http://127.0.0.1:1/steal',
        '//evil.example/v1/payouts/po_1',
        '/v1/../../admin',
        '/v1/payouts/..',
        '/v1/%2e%2e/%2E%2E/x',
        '/v1/%252e%252e/x',
        '/v1//payouts',
        '\\\\evil.example\\x',
        '/v1/payouts\\..\\..\\x',
        'v1/payouts/po_1',
        '/v1/payouts/po_1#frag',
        '/v1/pay outs',
      ]) {
        await expect(agent.fetch(read, path)).rejects.toBeInstanceOf(GatewayPathError);
      }
      await expect(agent.fetch({ connector: '../admin', action: 'x' }, '/v1/payouts')).rejects.toBeInstanceOf(GatewayPathError);
      expect(calls).toEqual([]); // not even a token exchange
      expect(
        () =>
          new Agent({
            issuer: services.issuer,
            gatewayUrl: 'http://gw.example/?x=1',
            clientId: 'a',
            key: { privateKey: world.agent.key.privateKey },
            allowInsecureRequests: true,
          }),
      ).toThrow(/plain base URL/);
    });

    it('refuses an agent whose key is not registered, as invalid_client', async () => {
      const task = await orchestrator.tasks.create(spec());
      const impostor = new Agent({
        issuer: services.issuer,
        gatewayUrl: services.gatewayUrl,
        clientId: world.agent.id,
        key: { privateKey: world.otherAgent.key.privateKey, kid: world.agent.key.publicJwk.kid },
        allowInsecureRequests: true,
      });
      const error = await impostor.credential(task.taskToken, payout(42000)).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(InvalidClientError);
      expect((error as InvalidClientError).status).toBe(401);
    });

    it("surfaces a policy refusal as a typed error with the policy's reasons", async () => {
      const task = await orchestrator.tasks.create(spec());
      const error = await agentOf()
        .credential(task.taskToken, payout(42000, 'acct_attacker'))
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(PolicyRefusalError);
      const refusal = error as PolicyRefusalError;
      expect(refusal.error).toBe('invalid_authorization_details');
      expect(refusal.status).toBe(400);
      expect(refusal.reasons.length).toBeGreaterThan(0);
      expect(refusal.reasons.join(' ')).toMatch(/destination/);
      // Refusals are not cached: the next (valid) request is a new exchange.
      await orchestrator.tasks.complete(task.taskId);
      await expect(agentOf().credential(task.taskToken, payout(42000))).rejects.toBeInstanceOf(InvalidGrantError);
    });

    it("waits for a human approval, polling with the server's interval and approval_id", async () => {
      const task = await orchestrator.tasks.create(spec());
      const pending: PendingApproval[] = [];
      const credential = await agentOf().credential(task.taskToken, payout(150000), {
        onPending: (seen) => {
          pending.push(seen);
          if (pending.length === 1) void admin('POST', `/v1/approvals/${seen.approvalId}/approve`, { note: 'invoice checked' });
        },
      });
      expect(pending[0]).toMatchObject({ approvalId: expect.stringMatching(/^[0-9a-f-]{36}$/), interval: 5 });
      expect(pending[0].reasons.join(' ')).toMatch(/approval/);
      expect(credential.authorizationDetails[0].constraints).toEqual(payout(150000).constraints);
      expect((await admin('GET', `/v1/approvals/${pending[0].approvalId}`)).body.status).toBe('used');
    }, 30_000); // one poll interval (5 s) of the server

    it('reports a denied approval as access_denied, and gives up after its timeout', async () => {
      const task = await orchestrator.tasks.create(spec());
      const denied = agentOf().credential(task.taskToken, payout(120000), {
        onPending: (seen) => void admin('POST', `/v1/approvals/${seen.approvalId}/deny`, { note: 'not ours' }),
      });
      await expect(denied).rejects.toBeInstanceOf(AccessDeniedError);
      const timedOut = await agentOf({ approvalTimeoutMs: 1000 })
        .credential(task.taskToken, payout(130000))
        .catch((caught: unknown) => caught);
      expect(timedOut).toBeInstanceOf(ApprovalTimeoutError);
      expect((timedOut as ApprovalTimeoutError).approvalId).toMatch(/^[0-9a-f-]{36}$/);
    }, 30_000);
  });

  describe('Vercel AI SDK tool', () => {
    const payoutTool = (taskToken: string) =>
      writTool({
        agent: agentOf().forTask(taskToken),
        description: 'Pay an invoice',
        inputSchema: z.object({ destination: z.string(), amount: z.number().int(), currency: z.string() }),
        connector: 'payments',
        action: 'payouts.create',
        constraints: (input) => ({ destination: input.destination, amount_max: input.amount, currency: input.currency }),
        request: (input) => ({ method: 'POST', path: '/v1/payouts', json: input }),
      });
    const options = { toolCallId: 'call-1', messages: [] };

    it("asks for exactly the call the model wants, and returns the upstream's answer", async () => {
      const task = await orchestrator.tasks.create(spec());
      const result = await payoutTool(task.taskToken).execute!({ destination: 'acct_1', amount: 42000, currency: 'usd' }, options);
      expect(result).toMatchObject({ status: 201, body: { destination: 'acct_1', amount: 42000, status: 'paid' } });
      const issued = (await orchestrator.tasks.get(task.taskId)).grants ?? [];
      expect(issued).toHaveLength(1);
      expect(issued[0]).toMatchObject({
        authorization_details: [expect.objectContaining({ constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' } })],
      });
    });

    it("gives the model the policy's refusal as the tool error", async () => {
      const task = await orchestrator.tasks.create(spec());
      const refused = payoutTool(task.taskToken).execute!({ destination: 'acct_attacker', amount: 42000, currency: 'usd' }, options);
      await expect(refused).rejects.toBeInstanceOf(ToolRefusalError);
      await expect(refused).rejects.toThrow(/invalid_authorization_details.*destination/);
    });
  });
});
