import { Client } from 'pg';
import { Agent, request } from 'undici';
import { FailureThrottle } from '@writ/platform';
import { clientAuthFields, createClientKey } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { tokenRequest } from './support/oauth-client';
import { setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_throttle_2f0d';
// A long window: a burst never straddles two windows, so the counts below are exact.
const THROTTLE = {
  WRIT_THROTTLE_WINDOW_SECONDS: '3600',
  WRIT_THROTTLE_SOURCE_FAILURES: '20',
  WRIT_THROTTLE_CLIENT_FAILURES: '10',
  WRIT_THROTTLE_AUDIT_EVENTS: '5',
};

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/**
 * Throttling of failed authentication across two instances over one database: failures fired
 * truly in parallel at both instances are limited exactly (per source address, per claimed
 * client id), 429 carries Retry-After, legitimate callers from other addresses (or with the
 * right key) go through, and the audit log grows by a bounded number of rows.
 */
describe('failure throttling across instances', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;
  let upstream: MockUpstream;
  const dispatchers = new Map<string, Agent>();

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    first = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp, env: THROTTLE });
    second = await startSecondInstance(first, { gateway: createGatewayApp, admin: createAdminApp, env: THROTTLE });
    world = await seedWorld(first.runtime.pool, upstream.url);
    await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
  });
  afterAll(async () => {
    await second.close();
    await first.close();
    await upstream.close();
    await Promise.all([...dispatchers.values()].map((dispatcher) => dispatcher.close()));
  });

  const portOf = (services: TestServices, index: number) => services.apps[index].getHttpServer().address().port as number;
  /** [first, second] base URLs of a service: 0 authorization server, 1 gateway, 2 admin. */
  const bases = (index: number) => [`http://127.0.0.1:${portOf(first, index)}`, `http://127.0.0.1:${portOf(second, index)}`];

  /** A request from a given loopback source address (the whole 127/8 is local on Linux). */
  async function from(source: string, url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
    let dispatcher = dispatchers.get(source);
    if (!dispatcher) {
      dispatcher = new Agent({ localAddress: source });
      dispatchers.set(source, dispatcher);
    }
    const response = await request(url, { method: (init.method ?? 'GET') as 'GET', headers: init.headers, body: init.body, dispatcher });
    const text = await response.body.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: response.statusCode, headers: response.headers, body };
  }
  const form = (fields: Record<string, string>) => ({
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields).toString(),
  });
  const count = async (sql: string, values: unknown[] = []) => Number((await first.runtime.pool.query<{ n: string }>(sql, values)).rows[0].n);
  const statuses = (answers: Answer[]) => {
    const tally: Record<number, number> = {};
    for (const answer of answers) tally[answer.status] = (tally[answer.status] ?? 0) + 1;
    return tally;
  };
  /** Fires `total` requests at once, alternating between the two instances. */
  const burst = (total: number, send: (instance: number, n: number) => Promise<Answer>) => Promise.all(Array.from({ length: total }, (_, n) => send(n % 2, n)));
  const expectThrottled = (answer: Answer) => {
    expect(answer.status).toBe(429);
    expect(Number(answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(answer.headers['retry-after'])).toBeLessThanOrEqual(3600);
    expect(answer.headers['cache-control']).toBe('no-store');
  };
  /** Every throttle of both instances (one per app). */
  const throttles = () => [...first.apps, ...second.apps].map((app) => app.get(FailureThrottle));
  /** Pretends every current window has ended and lets one instance summarise them (after every instance flushed its counts, as each does within a second). */
  const endWindows = async () => {
    for (const throttle of throttles()) await throttle.flush();
    await first.runtime.pool.query(`UPDATE throttle_failures SET window_start = window_start - interval '2 hours'`);
    await first.apps[0].get(FailureThrottle).summariseEndedWindows();
  };

  it('limits failed client authentication at the token endpoint per source, exactly, across both instances', async () => {
    const intruder = await createClientKey();
    const auth = bases(0);
    const refusedBefore = await count(`SELECT count(*) AS n FROM audit_events WHERE type = 'token.refused' AND actor_type = 'anonymous'`);
    // 60 failures from one address, each claiming a different client id (so only the source limit applies).
    const answers = await burst(60, async (instance, n) =>
      from(
        '127.0.1.1',
        `${auth[instance]}/oauth2/token`,
        form({
          grant_type: 'client_credentials',
          scope: 'tasks',
          ...(await clientAuthFields(`ghost-${n}`, intruder, first.issuer)),
        }),
      ),
    );
    expect(statuses(answers)).toEqual({ 401: 20, 429: 40 });
    const throttled = answers.find((answer) => answer.status === 429)!;
    expectThrottled(throttled);
    expect(throttled.body).toEqual({
      error: 'temporarily_unavailable',
      error_description: expect.stringMatching(/^too many failed requests .*\(retry after \d+ s\)$/),
    });
    expect(throttled.headers.pragma).toBe('no-cache');

    // The same orchestrator, from another address, on both instances: not blocked.
    for (const base of auth) {
      const legit = await from(
        '127.0.1.2',
        `${base}/oauth2/token`,
        form({
          grant_type: 'client_credentials',
          scope: 'tasks',
          ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, first.issuer)),
        }),
      );
      expect(legit.status).toBe(200);
    }

    // 60 anonymous failures: at most 5 events, then one summary for the window.
    const refusedAfter = await count(`SELECT count(*) AS n FROM audit_events WHERE type = 'token.refused' AND actor_type = 'anonymous'`);
    expect(refusedAfter - refusedBefore).toBe(5);
    await endWindows();
    const summaries = await first.runtime.pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'throttle.summary' AND data->>'source' = '127.0.1.1'`,
    );
    expect(summaries.rows.map((row) => row.data)).toEqual([
      expect.objectContaining({ scope: 'oauth', source: '127.0.1.1', failures: 60, not_recorded_individually: 55, window_seconds: 3600 }),
    ]);
    expect(await count(`SELECT count(*) AS n FROM throttle_failures`)).toBe(0);
  });

  it("counts another site's browser requests apart: a web page cannot lock out the agents at its address", async () => {
    const intruder = await createClientKey();
    const auth = bases(0);
    // What a page opened in a browser behind the agents' address can send (a no-cors form POST):
    // the browser adds Sec-Fetch-Site, the page cannot take it off.
    const answers = await burst(30, async (instance, n) => {
      const request = form({ grant_type: 'client_credentials', scope: 'tasks', ...(await clientAuthFields(`page-${n}`, intruder, first.issuer)) });
      return from('127.0.1.9', `${auth[instance]}/oauth2/token`, { ...request, headers: { ...request.headers, 'sec-fetch-site': 'cross-site' } });
    });
    // Throttled all the same, under a counter of their own.
    expect(statuses(answers)).toEqual({ 401: 20, 429: 10 });
    expect(await count(`SELECT count(*) AS n FROM throttle_failures WHERE key = 'oauth|source|127.0.1.9#cross-site'`)).toBe(1);
    // The orchestrator at that address is not refused.
    for (const base of auth) {
      const legit = await from(
        '127.0.1.9',
        `${base}/oauth2/token`,
        form({ grant_type: 'client_credentials', scope: 'tasks', ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, first.issuer)) }),
      );
      expect(legit.status).toBe(200);
    }
  });

  it('limits failures per claimed client id from many addresses, yet the client with its key still authenticates', async () => {
    const intruder = await createClientKey();
    const auth = bases(0);
    // 16 failures for orch-1, from 8 addresses (2 each: far under the source limit).
    const answers = await burst(16, async (instance, n) =>
      from(
        `127.0.2.${1 + (n % 8)}`,
        `${auth[instance]}/oauth2/token`,
        form({
          grant_type: 'client_credentials',
          scope: 'tasks',
          ...(await clientAuthFields(world.orchestrator.id, intruder, first.issuer)),
        }),
      ),
    );
    expect(statuses(answers)).toEqual({ 401: 10, 429: 6 });
    expectThrottled(answers.find((answer) => answer.status === 429)!);
    const legit = await from(
      '127.0.2.9',
      `${auth[1]}/oauth2/token`,
      form({
        grant_type: 'client_credentials',
        scope: 'tasks',
        ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, first.issuer)),
      }),
    );
    expect(legit.status).toBe(200);
  });

  it('counts introspection and revocation failures with the token endpoint (one OAuth scope)', async () => {
    const intruder = await createClientKey();
    const auth = bases(0);
    const events = () => count(`SELECT count(*) AS n FROM audit_events WHERE type = 'client.authentication_failed'`);
    const before = await events();
    const answers = await burst(30, async (instance, n) =>
      from(
        '127.0.3.1',
        `${auth[instance]}/oauth2/${n % 4 < 2 ? 'introspect' : 'revoke'}`,
        form({
          token: 'whatever',
          ...(await clientAuthFields(`ghost-${n}`, intruder, first.issuer)),
        }),
      ),
    );
    expect(statuses(answers)).toEqual({ 401: 20, 429: 10 });
    expect((await events()) - before).toBe(5);
  });

  it('counts refused bearer tokens at the Tasks API with the OAuth endpoints', async () => {
    const auth = bases(0);
    const answers = await burst(26, (instance, n) =>
      from('127.0.7.1', `${auth[instance]}/v1/tasks/00000000-0000-4000-8000-000000000000`, { headers: { authorization: `Bearer forged.token.${n}` } }),
    );
    expect(statuses(answers)).toEqual({ 401: 20, 429: 6 });
    expectThrottled(answers.find((answer) => answer.status === 429)!);
  });

  it('limits failed admin-token use per source across both admin instances', async () => {
    const admin = bases(2);
    const events = () => count(`SELECT count(*) AS n FROM audit_events WHERE type = 'admin.authentication_failed'`);
    const before = await events();
    const answers = await burst(40, (instance, n) =>
      from('127.0.4.1', `${admin[instance]}/v1/agents`, { headers: { authorization: `Bearer writ_admin_guess_${n}` } }),
    );
    expect(statuses(answers)).toEqual({ 401: 20, 429: 20 });
    const throttled = answers.find((answer) => answer.status === 429)!;
    expectThrottled(throttled);
    expect(throttled.body).toEqual({ error: 'too_many_requests', message: expect.stringMatching(/retry after \d+ s$/) });
    // Blocked on both instances, even with the right token, from that address (once each has seen it over the limit)...
    for (const base of admin) {
      expectThrottled(await from('127.0.4.1', `${base}/v1/agents`, { headers: { authorization: 'Bearer writ_admin_guess_again' } }));
    }
    for (const base of admin) {
      expect((await from('127.0.4.1', `${base}/v1/agents`, { headers: { authorization: `Bearer ${first.adminToken}` } })).status).toBe(429);
    }
    // ...but not from another one.
    for (const base of admin) {
      expect((await from('127.0.4.2', `${base}/v1/agents`, { headers: { authorization: `Bearer ${first.adminToken}` } })).status).toBe(200);
    }
    expect((await events()) - before).toBe(5);
  });

  it('limits unauthenticated gateway calls per source across both gateways; a valid call from elsewhere is forwarded', async () => {
    const gateway = bases(1);
    const denied = () => count(`SELECT count(*) AS n FROM audit_events WHERE type = 'gateway.call' AND actor_type = 'anonymous'`);
    const before = await denied();
    const answers = await burst(50, (instance, n) =>
      from('127.0.5.1', `${gateway[instance]}/connectors/payments/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer not.a.token${n}`, 'content-type': 'application/json' },
        body: '{"destination":"acct_1","amount":1,"currency":"usd"}',
      }),
    );
    expect(statuses(answers)).toEqual({ 401: 20, 429: 30 });
    expectThrottled(answers.find((answer) => answer.status === 429)!);
    expect((await denied()) - before).toBe(5);

    const task = await createTask(first, world.orchestrator);
    const credential = await tokenRequest(first.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    const received = upstream.received.length;
    const paid = await from('127.0.5.2', `${gateway[1]}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${credential.body.access_token}`, 'content-type': 'application/json' },
      body: '{"destination":"acct_1","amount":42000,"currency":"usd"}',
    });
    expect(paid.status).toBe(201);
    expect(upstream.received.length).toBe(received + 1);
  });

  it('lets the service role (not only the owner) keep the counters', async () => {
    const { rows } = await first.runtime.pool.query<{ privilege: string; granted: boolean }>(
      `SELECT p AS privilege, has_table_privilege('writ_service', 'throttle_failures', p) AS granted
         FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p`,
    );
    expect(rows.every((row) => row.granted)).toBe(true);
  });

  it('refuses a blocked source from memory: a burst of 200 costs a bounded number of row writes, and the summary stays exact', async () => {
    const admin = bases(2);
    const source = '127.0.8.1';
    const key = `admin|source|${source}`;
    // Blocked through the first instance only: the second has never seen this source.
    for (let n = 0; n < 21; n += 1) await from(source, `${admin[0]}/v1/agents`, { headers: { authorization: `Bearer guess_${n}` } });
    expect((await from(source, `${admin[0]}/v1/agents`)).status).toBe(429);
    // Every row written to the counters from now on (inserts and updates, by any instance).
    const superuser = new Client({ connectionString: first.db.url });
    await superuser.connect();
    try {
      await superuser.query(`CREATE TABLE throttle_writes (key text NOT NULL)`);
      await superuser.query(`CREATE FUNCTION throttle_write() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN INSERT INTO throttle_writes VALUES (NEW.key); RETURN NEW; END $$`);
      await superuser.query(`CREATE TRIGGER throttle_write AFTER INSERT OR UPDATE ON throttle_failures FOR EACH ROW EXECUTE FUNCTION throttle_write()`);
      const answers = await burst(200, (instance, n) =>
        from(source, `${admin[instance]}/v1/agents`, { headers: { authorization: `Bearer guess_again_${n}` } }),
      );
      expect(statuses(answers)).toEqual({ 429: 200 });
      for (const throttle of throttles()) await throttle.flush();
      // One upsert for the second instance to learn the block, then batched counts (one row per
      // flush and instance): a few writes, not one per request.
      const writes = Number((await superuser.query(`SELECT count(*) AS n FROM throttle_writes WHERE key = $1`, [key])).rows[0].n);
      expect(writes).toBeGreaterThanOrEqual(1);
      expect(writes).toBeLessThanOrEqual(8);
    } finally {
      await superuser.query(`DROP TRIGGER IF EXISTS throttle_write ON throttle_failures`);
      await superuser.query(`DROP FUNCTION IF EXISTS throttle_write()`);
      await superuser.query(`DROP TABLE IF EXISTS throttle_writes`);
      await superuser.end();
    }
    // Every refusal counted all the same: 21 failures, 1 + 200 refusals.
    expect(await count(`SELECT coalesce(sum(count), 0) AS n FROM throttle_failures WHERE key = $1`, [key])).toBe(222);
    await endWindows();
    const summary = await first.runtime.pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'throttle.summary' AND data->>'source' = $1`,
      [source],
    );
    expect(summary.rows.map((row) => row.data)).toEqual([expect.objectContaining({ scope: 'admin', failures: 222, not_recorded_individually: 217 })]);
  });

  it('flushes the refusals counted in memory on shutdown', async () => {
    const admin = bases(2);
    const source = '127.0.8.2';
    const key = `admin|source|${source}`;
    for (let n = 0; n < 21; n += 1) await from(source, `${admin[1]}/v1/agents`, { headers: { authorization: `Bearer guess_${n}` } });
    const throttle = second.apps[2].get(FailureThrottle);
    await throttle.flush();
    await Promise.all(Array.from({ length: 10 }, () => throttle.refuseIfBlocked('admin', source)));
    await throttle.onModuleDestroy();
    expect(await count(`SELECT coalesce(sum(count), 0) AS n FROM throttle_failures WHERE key = $1`, [key])).toBe(31);
  });

  it('keeps the audit log bounded under a burst of anonymous failures: a few events and one summary per source', async () => {
    await endWindows();
    // This source's events (an earlier call's outcome event may still be committing meanwhile).
    const rows = () => count(`SELECT count(*) AS n FROM audit_events WHERE data->>'source' = '127.0.6.1'`);
    const before = await rows();
    const admin = bases(2);
    await burst(200, (instance, n) => from('127.0.6.1', `${admin[instance]}/v1/connectors`, { headers: { authorization: `Bearer nope${n}` } }));
    await endWindows();
    // 5 individual events and 1 summary, whatever the size of the burst.
    expect((await rows()) - before).toBe(6);
    const summary = await first.runtime.pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'throttle.summary' AND data->>'source' = '127.0.6.1'`,
    );
    expect(summary.rows[0].data).toMatchObject({ scope: 'admin', failures: 200, not_recorded_individually: 195 });
  });
});
