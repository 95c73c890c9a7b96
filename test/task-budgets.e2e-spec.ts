import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, seedWorld, tasksToken, World, payoutEntry as sharedPayoutEntry } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { PAYMENTS_OPERATIONS, seedConnector, setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_budgets_51f0';
const payoutEntry = (amountMax: number, limits?: unknown) => sharedPayoutEntry(amountMax, limits !== undefined ? { limits } : {});
const READ_ENTRY = { type: 'connector', connector: 'payments', actions: ['payouts.get'] };

/**
 * Task budgets (`limits` of an `allowed` entry), held across every credential of the task and
 * both gateway instances: the gateway reserves each call atomically before forwarding, refuses
 * past the limit with nothing sent upstream, and gives the reservation back when the upstream
 * could not be reached.
 */
describe('task budgets across credentials and gateway instances', () => {
  let first: TestServices;
  let second: TestServices;
  /** A gateway that may reach no loopback address (`WRIT_UPSTREAM_ALLOWED_NETWORKS` empty), over the same database. */
  let strict: TestServices;
  let world: World;
  let upstream: MockUpstream;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    first = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    second = await startSecondInstance(first, { gateway: createGatewayApp });
    strict = await startSecondInstance(first, { gateway: createGatewayApp, env: { WRIT_UPSTREAM_ALLOWED_NETWORKS: '' } });
    world = await seedWorld(first.runtime.pool, upstream.url);
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    // Nothing listens on port 9 of loopback: connections are refused.
    await seedConnector(first.runtime.pool, 'deadpay', PAYMENTS_OPERATIONS, 'http://127.0.0.1:9');
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'deadpay', { type: 'bearer', token: SECRET });
  });
  afterAll(async () => {
    await strict.close();
    await second.close();
    await first.close();
    await upstream.close();
  });

  const gatewayOf = (services: TestServices) => `http://127.0.0.1:${services.apps[services.apps.length - 1].getHttpServer().address().port}`;
  const secondGateway = () => gatewayOf(second);
  const credential = async (taskToken: string, details: unknown) => {
    const response = await tokenRequest(first.issuer, world.agent, exchangeFields(taskToken, details));
    expect(response.status).toBe(200);
    return response.body.access_token as string;
  };
  const pay = (base: string, token: string, amount: number, connector = 'payments') =>
    http(`${base}/connectors/${connector}/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ destination: 'acct_1', amount, currency: 'usd' }),
    });
  const payouts = () => upstream.received.filter((request) => request.method === 'POST').length;

  /** What the task's `calls` and `sum:amount_max` budgets have used. */
  const expectCharged = async (taskId: string, calls: number, amount: number) => {
    const { rows } = await first.runtime.pool.query(`SELECT rule, used::float8 AS used FROM task_budgets WHERE task_id = $1 ORDER BY rule`, [taskId]);
    expect(rows).toEqual([
      { rule: 'calls', used: calls },
      { rule: 'sum:amount_max', used: amount },
    ]);
  };

  it('forwards exactly 3 payouts of 30,000 out of 20 concurrent calls under a sum limit of 90,000', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000, { calls: 10, sum: { amount_max: 90000 } })] });
    const request = [payoutEntry(30000)];
    const tokens = await Promise.all(Array.from({ length: 20 }, () => credential(task.task_token, request)));
    const before = payouts();
    const results = await Promise.all(tokens.map((token, n) => pay(n % 2 ? secondGateway() : first.gatewayUrl, token, 30000)));
    expect(results.filter((result) => result.status === 201)).toHaveLength(3);
    const refused = results.filter((result) => result.status !== 201);
    expect(refused).toHaveLength(17);
    for (const result of refused) {
      expect(result.status).toBe(403);
      expect(result.body).toMatchObject({ error: 'insufficient_scope', rule: 'limit:sum:amount_max' });
    }
    expect(payouts()).toBe(before + 3);
    await expectCharged(task.task_id, 3, 90000);
    // A refused call spent nothing: its one-use credential is still unused.
    const unused = await first.runtime.pool.query(`SELECT count(*) FROM access_tokens WHERE task_id = $1 AND uses = 0`, [task.task_id]);
    expect(Number(unused.rows[0].count)).toBe(17);
  });

  it('holds a calls limit across 20 concurrent credentials on both instances', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(50000, { calls: 3 })] });
    const tokens = await Promise.all(Array.from({ length: 20 }, () => credential(task.task_token, [payoutEntry(100)])));
    const before = payouts();
    const results = await Promise.all(tokens.map((token, n) => pay(n % 2 ? secondGateway() : first.gatewayUrl, token, 100)));
    expect(results.filter((result) => result.status === 201)).toHaveLength(3);
    for (const result of results.filter((result) => result.status !== 201)) {
      expect(result.body).toMatchObject({ error: 'insufficient_scope', rule: 'limit:calls' });
    }
    expect(payouts()).toBe(before + 3);
    await first.runtime.audit.drain();
    await second.runtime.audit.drain();
    const denied = await first.runtime.pool.query(
      `SELECT count(*) FROM audit_events WHERE task_id = $1 AND type = 'gateway.call' AND outcome = 'denied' AND data->>'rule' = 'limit:calls'`,
      [task.task_id],
    );
    expect(Number(denied.rows[0].count)).toBe(17);
  });

  it('charges one budgeted one-use credential fired 6 times in parallel on both instances exactly once', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000, { calls: 5, sum: { amount_max: 90000 } })] });
    const token = await credential(task.task_token, [payoutEntry(30000)]);
    const before = payouts();
    const results = await Promise.all(Array.from({ length: 6 }, (_, n) => pay(n % 2 ? secondGateway() : first.gatewayUrl, token, 30000)));
    expect(results.map((result) => result.status).sort()).toEqual([201, 401, 401, 401, 401, 401]);
    expect(payouts()).toBe(before + 1);
    // The calls that found the use spent gave their reservation back in their own transaction.
    await expectCharged(task.task_id, 1, 30000);
  });

  it('charges nothing for an amount it cannot read exactly (beyond 2^53, exponent, as a string)', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(1e16, { calls: 5, sum: { amount_max: 1e15 } })] });
    const before = payouts();
    const send = async (amount: string) =>
      http(`${first.gatewayUrl}/connectors/payments/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await credential(task.task_token, [payoutEntry(1e16)])}`, 'content-type': 'application/json' },
        body: `{"destination":"acct_1","amount":${amount},"currency":"usd"}`,
      });
    for (const amount of ['9007199254740993', '1e308', '3e4', '-0']) expect((await send(amount)).status).toBe(400);
    const text = await send('"30000"');
    expect(text.status).toBe(403);
    expect(text.body.rule).toBe('constraint:amount_max');
    expect(payouts()).toBe(before);
    await expectCharged(task.task_id, 0, 0);
  });

  it('refuses a negative amount that would refill a sum budget', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000, { sum: { amount_max: 30000 } })] });
    const before = payouts();
    const negative = await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(30000)]), -30000);
    expect(negative.status).toBe(403);
    expect(negative.body.rule).toBe('limit:sum:amount_max');
    expect((await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(30000)]), 30000)).status).toBe(201);
    expect((await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(30000)]), 1)).status).toBe(403);
    expect(payouts()).toBe(before + 1);
  });

  it('charges a credential to every limited entry that covers it, even when an unlimited one also does', async () => {
    const task = await createTask(first, world.orchestrator, {
      allowed: [payoutEntry(50000), payoutEntry(50000, { calls: 1 }), READ_ENTRY],
    });
    expect((await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(10)]), 10)).status).toBe(201);
    const second = await pay(secondGateway(), await credential(task.task_token, [payoutEntry(10)]), 10);
    expect(second.status).toBe(403);
    expect(second.body.rule).toBe('limit:calls');
    // The read entry declares no limits: its credentials carry no budget at all.
    await credential(task.task_token, [READ_ENTRY]);
    const { rows } = await first.runtime.pool.query(`SELECT action, budget_entries FROM access_tokens WHERE task_id = $1 ORDER BY issued_at`, [task.task_id]);
    // Credentials of one audit batch share `issued_at`: compare as a sorted list.
    expect(rows.map((row) => [row.action, row.budget_entries]).sort((a, b) => String(a[0]).localeCompare(String(b[0])))).toEqual([
      ['payouts.create', [1]],
      ['payouts.create', [1]],
      ['payouts.get', null],
    ]);
  });

  it('gives the reservation back, audited, when the upstream cannot be reached', async () => {
    const task = await createTask(first, world.orchestrator, {
      allowed: [{ ...payoutEntry(30000, { calls: 1, sum: { amount_max: 30000 } }), connector: 'deadpay' }],
    });
    const request = [{ ...payoutEntry(30000), connector: 'deadpay' }];
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const failed = await pay(first.gatewayUrl, await credential(task.task_token, request), 30000, 'deadpay');
      expect(failed.status).toBe(502);
    }
    await expectCharged(task.task_id, 0, 0);
    await first.runtime.audit.drain();
    const released = await first.runtime.pool.query(`SELECT data FROM audit_events WHERE task_id = $1 AND type = 'gateway.budget_released'`, [task.task_id]);
    expect(released.rows).toHaveLength(2);
    expect(released.rows[0].data.budget).toEqual(expect.arrayContaining([expect.objectContaining({ rule: 'calls', amount: 1 })]));
  });

  it('gives the reservation back when the gateway refuses the resolved address at connect time: nothing was sent', async () => {
    // A host name is checked on the address it resolves to when connecting (after the call was
    // reserved and audited); the strict instance refuses loopback, so nothing leaves it.
    await seedConnector(first.runtime.pool, 'namedpay', PAYMENTS_OPERATIONS, upstream.url.replace('127.0.0.1', 'localhost'));
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'namedpay', { type: 'bearer', token: SECRET });
    const task = await createTask(first, world.orchestrator, {
      allowed: [{ ...payoutEntry(30000, { calls: 1, sum: { amount_max: 30000 } }), connector: 'namedpay' }],
    });
    const request = [{ ...payoutEntry(30000), connector: 'namedpay' }];
    const before = payouts();
    const refused = await pay(gatewayOf(strict), await credential(task.task_token, request), 30000, 'namedpay');
    expect(refused.status).toBe(502);
    expect(refused.body.error_description).toMatch(/nothing was sent/);
    expect(payouts()).toBe(before);
    await expectCharged(task.task_id, 0, 0);
    await strict.runtime.audit.drain();
    const released = await first.runtime.pool.query(`SELECT data FROM audit_events WHERE task_id = $1 AND type = 'gateway.budget_released'`, [task.task_id]);
    expect(released.rows).toHaveLength(1);
    expect(released.rows[0].data.reason).toBe('upstream_address_refused');
    // The whole budget is still there for a gateway that can reach the upstream.
    expect((await pay(first.gatewayUrl, await credential(task.task_token, request), 30000, 'namedpay')).status).toBe(201);
    expect(payouts()).toBe(before + 1);
  });

  it('keeps the reservation when the resend after an upstream 401 cannot connect: the first send reached the upstream', async () => {
    // A client-credentials connector: the upstream takes the payout, answers 401 and goes away
    // (Connection: close, listener closed), so the gateway's refreshed resend is refused at
    // connect. The request did reach the upstream: its reservation is not given back.
    let received = 0;
    const tokens = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ access_token: `at_${Date.now()}_${Math.random()}`, token_type: 'Bearer', expires_in: 3600 }));
    });
    const vanishing = createServer((req, res) => {
      received += 1;
      req.resume();
      vanishing.close();
      res.writeHead(401, { connection: 'close', 'www-authenticate': 'Bearer error="invalid_token"' });
      res.end();
    });
    const listen = async (server: ReturnType<typeof createServer>) => {
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };
    const tokenUrl = `${await listen(tokens)}/oauth/token`;
    try {
      await seedConnector(first.runtime.pool, 'flakypay', PAYMENTS_OPERATIONS, await listen(vanishing));
      await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'flakypay', {
        type: 'oauth2_client_credentials',
        token_url: tokenUrl,
        client_id: 'writ',
        client_secret: 'cs_flakypay_0123456789',
      });
      const task = await createTask(first, world.orchestrator, {
        allowed: [{ ...payoutEntry(30000, { calls: 1, sum: { amount_max: 30000 } }), connector: 'flakypay' }],
      });
      const request = [{ ...payoutEntry(30000), connector: 'flakypay' }];
      const failed = await pay(first.gatewayUrl, await credential(task.task_token, request), 30000, 'flakypay');
      expect(failed.status).toBe(502);
      expect(received).toBe(1);
      await expectCharged(task.task_id, 1, 30000);
      await first.runtime.audit.drain();
      const released = await first.runtime.pool.query(`SELECT count(*) FROM audit_events WHERE task_id = $1 AND type = 'gateway.budget_released'`, [
        task.task_id,
      ]);
      expect(Number(released.rows[0].count)).toBe(0);
      // The budget is spent: another payout is refused before anything is sent.
      const again = await pay(first.gatewayUrl, await credential(task.task_token, request), 1, 'flakypay');
      expect(again.status).toBe(403);
      expect(again.body.rule).toBe('limit:calls');
    } finally {
      tokens.close();
      vanishing.close();
    }
  });

  it('keeps the reservation of a call that left: upstream timeout, reset after the request, agent gone mid-call', async () => {
    // An upstream that takes each payout and then hangs, resets the connection, or answers late.
    let mode: 'hang' | 'reset' | 'late' = 'hang';
    let received = 0;
    const taker = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        received += 1;
        if (mode === 'reset') req.socket.destroy();
        else if (mode === 'late') setTimeout(() => res.writeHead(201, { 'content-type': 'application/json' }).end('{}'), 600).unref();
      });
    });
    taker.listen(0, '127.0.0.1');
    await once(taker, 'listening');
    await seedConnector(first.runtime.pool, 'takerpay', PAYMENTS_OPERATIONS, `http://127.0.0.1:${(taker.address() as AddressInfo).port}`);
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'takerpay', { type: 'bearer', token: SECRET });
    const impatient = await startSecondInstance(first, { gateway: createGatewayApp, env: { WRIT_UPSTREAM_TIMEOUT_MS: '300' } });
    try {
      const entry = { ...payoutEntry(30000, { calls: 5, sum: { amount_max: 30000 } }), connector: 'takerpay' };
      const request = [{ ...payoutEntry(30000), connector: 'takerpay' }];
      const expectKept = async (taskId: string) => {
        await expectCharged(taskId, 1, 30000);
        await first.runtime.audit.drain();
        await impatient.runtime.audit.drain();
        const released = await first.runtime.pool.query(`SELECT count(*) FROM audit_events WHERE task_id = $1 AND type = 'gateway.budget_released'`, [taskId]);
        expect(Number(released.rows[0].count)).toBe(0);
      };
      for (const [kind, status] of [
        ['hang', 504],
        ['reset', 502],
      ] as const) {
        mode = kind;
        const task = await createTask(first, world.orchestrator, { allowed: [entry] });
        const before = received;
        expect((await pay(gatewayOf(impatient), await credential(task.task_token, request), 30000, 'takerpay')).status).toBe(status);
        expect(received).toBe(before + 1);
        await expectKept(task.task_id);
      }
      // The agent hangs up while the upstream is still working on its payout.
      mode = 'late';
      const task = await createTask(first, world.orchestrator, { allowed: [entry] });
      const token = await credential(task.task_token, request);
      const before = received;
      const gone = new AbortController();
      const call = http(`${first.gatewayUrl}/connectors/takerpay/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ destination: 'acct_1', amount: 30000, currency: 'usd' }),
        signal: gone.signal,
      });
      for (let wait = 0; wait < 100 && received === before; wait += 1) await new Promise((resolve) => setTimeout(resolve, 10));
      gone.abort();
      await expect(call).rejects.toThrow();
      await new Promise((resolve) => setTimeout(resolve, 800));
      expect(received).toBe(before + 1);
      await expectKept(task.task_id);
    } finally {
      await impatient.close();
      taker.closeAllConnections();
      taker.close();
    }
  });

  it('charges the amount of the whole body as forwarded: chunked, and past the body limit nothing at all', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000, { calls: 5, sum: { amount_max: 30000 } })] });
    const before = payouts();
    // Chunked, the amount split across chunks: read and charged whole.
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"destination":"acct_1","amo'));
        controller.enqueue(new TextEncoder().encode('unt":20000,"currency":"usd"}'));
        controller.close();
      },
    });
    const sent = await http(`${first.gatewayUrl}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await credential(task.task_token, [payoutEntry(30000)])}`, 'content-type': 'application/json' },
      body: chunked,
      duplex: 'half',
    });
    expect(sent.status).toBe(201);
    await expectCharged(task.task_id, 1, 20000);
    // Past WRIT_GATEWAY_BODY_LIMIT, chunked (no Content-Length): refused whole, a small amount in
    // the prefix read so far charges nothing, and nothing is sent.
    const oversized = `{"destination":"acct_1","amount":1,"currency":"usd","memo":"${'x'.repeat(1_100_000)}"}`;
    const big = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(oversized.slice(0, 64)));
        controller.enqueue(new TextEncoder().encode(oversized.slice(64)));
        controller.close();
      },
    });
    const refused = await http(`${first.gatewayUrl}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await credential(task.task_token, [payoutEntry(30000)])}`, 'content-type': 'application/json' },
      body: big,
      duplex: 'half',
    }).catch(() => ({ status: 413 }));
    expect(refused.status).toBe(413);
    expect(payouts()).toBe(before + 1);
    await expectCharged(task.task_id, 1, 20000);
  });

  it('never forwards more than a sum allows when calls of mixed amounts race on both instances', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(1000, { calls: 30, sum: { amount_max: 1000 } })] });
    const amounts = Array.from({ length: 40 }, (_, n) => [7, 13, 101, 250, 333, 0.5, 999][n % 7]);
    const tokens = await Promise.all(amounts.map(() => credential(task.task_token, [payoutEntry(1000)])));
    const before = upstream.received.length;
    const results = await Promise.all(amounts.map((amount, n) => pay(n % 2 ? secondGateway() : first.gatewayUrl, tokens[n], amount)));
    const forwarded = upstream.received.slice(before).map((request) => (JSON.parse(request.body.toString('utf8')) as { amount: number }).amount);
    expect(forwarded).toHaveLength(results.filter((result) => result.status === 201).length);
    const total = forwarded.reduce((sum, amount) => sum + amount, 0);
    expect(total).toBeLessThanOrEqual(1000);
    const { rows } = await first.runtime.pool.query(`SELECT used::float8 AS used FROM task_budgets WHERE task_id = $1 AND rule = 'sum:amount_max'`, [
      task.task_id,
    ]);
    expect(rows[0].used).toBeCloseTo(total, 9);
    for (const result of results.filter((result) => result.status !== 201)) expect(result.body.rule).toBe('limit:sum:amount_max');
  });

  it('sums decimal amounts exactly: 0.1 + 0.2 fills a limit of 0.3, and what is left reads 0.2, not 0.19999999999999998', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(1, { sum: { amount_max: 0.3 } })] });
    const before = payouts();
    expect((await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(1)]), 0.1)).status).toBe(201);
    const tasksApi = await tasksToken(first, world.orchestrator);
    const afterFirst = await sendJson('GET', `${first.issuer}/v1/tasks/${task.task_id}`, undefined, tasksApi);
    expect(afterFirst.body.budgets).toEqual([{ entry: 0, sum: { amount_max: { limit: 0.3, used: 0.1, remaining: 0.2 } } }]);
    const dryRun = await sendJson(
      'POST',
      `${first.adminUrl}/v1/policies/evaluate`,
      { task_id: task.task_id, authorization_details: [payoutEntry(1)] },
      first.adminToken,
    );
    expect(dryRun.body.input.task.budgets).toEqual(afterFirst.body.budgets);
    // Exactly at the limit is allowed (0.1 + 0.2 = 0.3 in decimal, not 0.30000000000000004); past it is not.
    expect((await pay(secondGateway(), await credential(task.task_token, [payoutEntry(1)]), 0.2)).status).toBe(201);
    const past = await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(1)]), 0.01);
    expect(past.status).toBe(403);
    expect(past.body.rule).toBe('limit:sum:amount_max');
    expect(payouts()).toBe(before + 2);
    const full = await sendJson('GET', `${first.issuer}/v1/tasks/${task.task_id}`, undefined, tasksApi);
    expect(full.body.budgets).toEqual([{ entry: 0, sum: { amount_max: { limit: 0.3, used: 0.3, remaining: 0 } } }]);
  });

  it('names the passed sum when only exact decimals show it (the doubles would round the total back to the limit)', async () => {
    // 0.2711820000324189 + 0.23348909192552214 is 0.50467109195794104 exactly, but 0.504671091957941 in doubles.
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(1, { calls: 5, sum: { amount_max: 0.504671091957941 } })] });
    expect((await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(1)]), 0.2711820000324189)).status).toBe(201);
    const past = await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(1)]), 0.23348909192552214);
    expect(past.status).toBe(403);
    expect(past.body).toMatchObject({ error: 'insufficient_scope', rule: 'limit:sum:amount_max' });
    expect(past.body.error_description).toBe(
      "the task's budget allowed[0].limits.sum.amount_max (0.504671091957941) would be exceeded: 0.2711820000324189 used, this call needs 0.23348909192552214",
    );
  });

  it('shows the policy what is left: input.task.allowed[i].limits and input.task.budgets', async () => {
    const task = await createTask(first, world.orchestrator, { allowed: [payoutEntry(30000, { calls: 4, sum: { amount_max: 90000 } }), READ_ENTRY] });
    expect((await pay(first.gatewayUrl, await credential(task.task_token, [payoutEntry(20000)]), 20000)).status).toBe(201);
    const dryRun = await sendJson(
      'POST',
      `${first.adminUrl}/v1/policies/evaluate`,
      { task_id: task.task_id, authorization_details: [payoutEntry(30000)] },
      first.adminToken,
    );
    expect(dryRun.status).toBe(200);
    expect(dryRun.body.input.task.allowed[0].limits).toEqual({ calls: 4, sum: { amount_max: 90000 } });
    expect(dryRun.body.input.task.budgets).toEqual([
      { entry: 0, calls: { limit: 4, used: 1, remaining: 3 }, sum: { amount_max: { limit: 90000, used: 20000, remaining: 70000 } } },
    ]);
    const read = await sendJson('GET', `${first.issuer}/v1/tasks/${task.task_id}`, undefined, await tasksToken(first, world.orchestrator));
    expect(read.body.allowed[0].limits).toEqual({ calls: 4, sum: { amount_max: 90000 } });
    expect(read.body.budgets).toEqual(dryRun.body.input.task.budgets);
  });
});
