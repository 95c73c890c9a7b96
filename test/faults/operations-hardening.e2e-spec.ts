import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { Client } from 'pg';
import { tagActivePolicyRow } from '@writ/testing';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { eventually } from '../support/eventually';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld } from '../support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from '../support/mock-upstreams';
import { tokenRequest } from '../support/oauth-client';
import { setConnectorCredential } from '../support/seed';
import { startTestServices, TestServices } from '../support/test-services';

jest.setTimeout(120_000);

const UPSTREAM_SECRET = 'sk_live_ops_logs_9d2e';

/**
 * Sends `head`, then `drip` every 100 ms for ever, and resolves with what came back once the
 * server closes the connection (a server without deadlines never does: the test times out).
 */
function dribble(url: string, head: string, drip: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    let received = '';
    let timer: NodeJS.Timeout | undefined;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearInterval(timer);
      resolve(received);
    });
    socket.on('connect', () => {
      socket.write(head);
      timer = setInterval(() => socket.write(drip), 100);
    });
  });
}

describe('faults: operations hardening', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({
      gateway: createGatewayApp,
      admin: createAdminApp,
      env: {
        WRIT_HTTP_HEADERS_TIMEOUT_MS: '500',
        WRIT_HTTP_REQUEST_TIMEOUT_MS: '1000',
        WRIT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: '7000',
      },
    });
  });
  afterAll(async () => {
    await services?.close();
  });

  /** The authorization server reports ready again (its checks recover once the fault is undone). */
  const expectReadyAgain = async () => {
    const ready = await eventually(
      () => fetch(`${services.issuer}/health/ready`),
      (res) => res.status === 200,
    );
    expect(ready.status).toBe(200);
  };

  it('keeps connector ids guessed by unauthenticated callers out of the metrics labels', async () => {
    const guesses = Array.from({ length: 20 }, (_, n) => `guessed-connector-${n}`);
    const answers = await Promise.all(
      guesses.map((id) => fetch(`${services.gatewayUrl}/connectors/${id}/v1/things`, { headers: { authorization: 'Bearer not-a-token' } })),
    );
    for (const answer of answers) expect(answer.status).toBe(401);
    // The refusals were audited (each is a gateway.call event), so the metrics saw them.
    const { rows } = await services.runtime.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events WHERE type = 'gateway.call' AND connector_id LIKE 'guessed-connector-%'`,
    );
    expect(rows[0].n).toBe(guesses.length);
    const text = await (await fetch(`${services.adminUrl}/metrics`)).text();
    expect(text).not.toContain('guessed-connector');
    expect(text).toMatch(/writ_gateway_calls_total\{connector="other",operation="none",status="401"\} (\d+)/);
    expect(Number(/writ_gateway_calls_total\{connector="other",operation="none",status="401"\} (\d+)/.exec(text)![1])).toBeGreaterThanOrEqual(guesses.length);
  });

  // Node's defaults would hold these connections 60 s (headers) and 300 s (body), looked for
  // every 30 s: the tests' own deadline (20 s) fails them there.
  it('cuts a caller that dribbles its headers (slowloris) with 408', async () => {
    // One header line now and then, never the blank line that ends them.
    const received = await dribble(services.authUrl, 'GET /health/live HTTP/1.1\r\nHost: x\r\n', 'X-Slow: 1\r\n');
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    // A connection that never sends a byte is cut the same way.
    expect(await dribble(services.gatewayUrl, '', '')).toMatch(/^HTTP\/1\.1 408 /);
  }, 20_000);

  it('cuts a caller that dribbles its body with 408, on every service', async () => {
    const form = 'POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n';
    // The admin API reads a body only once its token is known (an unknown one is a 401 at once).
    const admin = `POST /v1/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${services.adminToken}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n`;
    const received = await Promise.all([dribble(services.authUrl, form, 'a'), dribble(services.gatewayUrl, form, 'a'), dribble(services.adminUrl, admin, ' ')]);
    // A service that answers before reading the body (a 404) still cuts the connection.
    for (const text of received) expect(text).toContain('HTTP/1.1 408 Request Timeout');
  }, 20_000);

  it('buffers at most two policy bundles at once (8 MB each), also from a known admin token', async () => {
    const { hostname, port } = new URL(services.adminUrl);
    const head = (length: number) =>
      `PUT /v1/policies/active HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${services.adminToken}\r\nContent-Type: application/wasm\r\nContent-Length: ${length}\r\n\r\n`;
    // Two uploads that never finish their body hold the two places (until this suite's 1 s
    // request timeout cuts them)...
    const hold = () => {
      const socket = connect(Number(port), hostname);
      socket.on('error', () => undefined);
      socket.write(head(8_000_000));
      socket.write(Buffer.alloc(1000));
      return socket;
    };
    // ...and a third is refused at once. The probe sends its whole (tiny, invalid) bundle, so that
    // a probe admitted before the holders (their tokens are checked first, asynchronously) ends at
    // once with its own answer and frees its place: the attempt is made again with new holders.
    const probe = () =>
      new Promise<string>((resolve) => {
        const socket = connect(Number(port), hostname);
        let received = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => {
          received += chunk;
          if (received.includes('\r\n\r\n')) {
            socket.destroy();
            resolve(received);
          }
        });
        socket.on('error', () => resolve(received));
        socket.on('close', () => resolve(received));
        socket.write(head(4) + 'wasm');
      });
    const attempt = async () => {
      const holders = [hold(), hold()];
      try {
        return await probe();
      } finally {
        for (const socket of holders) socket.destroy();
      }
    };
    const answer = await eventually(attempt, (text) => text.startsWith('HTTP/1.1 503 '));
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer.toLowerCase()).toContain('retry-after: 5');
  });

  it('ends a transaction left idle on a service connection (idle_in_transaction_session_timeout)', async () => {
    const { rows } = await services.runtime.pool.query<{ idle_in_transaction_session_timeout: string }>('SHOW idle_in_transaction_session_timeout');
    expect(rows[0].idle_in_transaction_session_timeout).toBe('7s');
    const viaTypeorm: Array<{ idle_in_transaction_session_timeout: string }> = await services.runtime.dataSource.query(
      'SHOW idle_in_transaction_session_timeout',
    );
    expect(viaTypeorm[0].idle_in_transaction_session_timeout).toBe('7s');
  });

  it('fails readiness when no signing key is loaded, and names the check', async () => {
    const admin = new Client({ connectionString: services.db.url });
    await admin.connect();
    const { rows } = await admin.query<{ kid: string; status: string }>(`SELECT kid, status FROM signing_keys WHERE status <> 'retired'`);
    try {
      await admin.query(`UPDATE signing_keys SET status = 'retired' WHERE status <> 'retired'`);
      await services.runtime.signingKeys.reload();
      const ready = await eventually(
        () => fetch(`${services.issuer}/health/ready`),
        (res) => res.status === 503,
      );
      expect(ready.status).toBe(503);
      expect(ready.headers.get('retry-after')).toBe('5');
      expect(await ready.json()).toEqual(expect.objectContaining({ failing: ['signing_keys'] }));
      expect((await fetch(`${services.issuer}/health/live`)).status).toBe(200);
    } finally {
      for (const row of rows) await admin.query('UPDATE signing_keys SET status = $2 WHERE kid = $1', [row.kid, row.status]);
      await admin.end();
      await services.runtime.signingKeys.reload();
    }
    await expectReadyAgain();
  });

  it('fails readiness where the active stored policy does not load (exchanges would be 503), not on the gateway', async () => {
    const admin = new Client({ connectionString: services.db.url });
    await admin.connect();
    try {
      // Stored behind the admin API's back: it cannot load anywhere.
      await admin.query(`INSERT INTO policies (version, bundle, source, loaded_by, active) VALUES ('broken-ops', '\\x00', 'test', 'test', true)`);
      // Tagged as if Writ had activated it: what fails is the load, not the integrity tag.
      await tagActivePolicyRow(admin, services.runtime.rowIntegrity);
      const ready = await eventually(
        () => fetch(`${services.issuer}/health/ready`),
        (res) => res.status === 503,
      );
      expect(ready.status).toBe(503);
      expect(await ready.json()).toEqual(expect.objectContaining({ failing: ['policy'] }));
      expect((await fetch(`${services.gatewayUrl}/health/ready`)).status).toBe(200);
    } finally {
      await admin.query(`UPDATE policies SET active = false WHERE version = 'broken-ops'`);
      await admin.end();
    }
    await expectReadyAgain();
  });

  it('names a failing database without telling an unauthenticated prober its host, login or name', async () => {
    const maintenance = new URL(services.db.url);
    maintenance.pathname = '/postgres';
    const admin = new Client({ connectionString: maintenance.toString() });
    await admin.connect();
    try {
      await admin.query(`ALTER DATABASE ${services.db.name} ALLOW_CONNECTIONS false`);
      await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, [services.db.name]);
      const ready = await eventually(
        () => fetch(`${services.adminUrl}/health/ready`),
        (res) => res.status === 503,
      );
      expect(ready.status).toBe(503);
      const text = await ready.text();
      expect(JSON.parse(text)).toEqual(expect.objectContaining({ failing: ['database'] }));
      const { hostname, port, username } = new URL(services.db.serviceUrl ?? services.db.url);
      for (const internal of [services.db.name, hostname, `:${port}`, username]) expect(text).not.toContain(internal);
      expect((await fetch(`${services.adminUrl}/health/live`)).status).toBe(200);
    } finally {
      await admin.query(`ALTER DATABASE ${services.db.name} ALLOW_CONNECTIONS true`);
      await admin.end();
    }
    expect(
      (
        await eventually(
          () => fetch(`${services.adminUrl}/health/ready`),
          (res) => res.status === 200,
          20_000,
        )
      ).status,
    ).toBe(200);
  });

  it('renders a flood of scrapes (never shed) one at a time, with one pool query at a time', async () => {
    // The pool's own method, wrapped for this test only (an own property, deleted after).
    const pool = services.runtime.pool as unknown as { query: (...args: unknown[]) => Promise<unknown> };
    const original = pool.query.bind(pool);
    let running = 0;
    let most = 0;
    let seen = 0;
    pool.query = (...args: unknown[]): Promise<unknown> => {
      if (typeof args[0] !== 'string' || !args[0].includes('FROM approvals')) return original(...args);
      seen += 1;
      running += 1;
      most = Math.max(most, running);
      return original(...args).finally(() => (running -= 1));
    };
    try {
      const answers = await Promise.all(Array.from({ length: 100 }, () => fetch(`${services.adminUrl}/metrics`)));
      for (const answer of answers) expect(answer.status).toBe(200);
      for (const answer of answers) expect(await answer.text()).toContain('writ_approvals_pending');
      expect(seen).toBeGreaterThanOrEqual(1);
      expect(most).toBe(1);
    } finally {
      delete (pool as { query?: unknown }).query;
    }
  });

  it('answers a flood of readiness probes (never shed) with a bounded number of database queries', async () => {
    const query = jest.spyOn(services.runtime.pool, 'query');
    // Past the reuse of the last answer (a second), so that this flood checks at least once.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    try {
      const answers = await Promise.all(Array.from({ length: 200 }, () => fetch(`${services.authUrl}/health/ready`)));
      for (const answer of answers) expect(answer.status).toBe(200);
      const probes = query.mock.calls.filter(([text]) => text === 'SELECT 1').length;
      // One shared check per second at most, however many probes arrive.
      expect(probes).toBeGreaterThanOrEqual(1);
      expect(probes).toBeLessThan(50);
    } finally {
      query.mockRestore();
    }
  });
});

describe('faults: what the logs keep of a request', () => {
  let services: TestServices;
  const lines: string[] = [];

  let upstream: MockUpstream;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(UPSTREAM_SECRET);
    services = await startTestServices({ gateway: createGatewayApp, logSink: (line) => lines.push(line) });
  });
  afterAll(async () => {
    await services?.close();
    await upstream?.close();
  });

  it('keeps every token, assertion and upstream credential out of the debug log, on success and refusal', async () => {
    const world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: UPSTREAM_SECRET });
    const task = await createTask(services, world.orchestrator);
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(exchanged.status).toBe(200);
    const token = exchanged.body.access_token as string;
    const pay = (authorization: string) =>
      fetch(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
        method: 'POST',
        headers: { authorization, 'content-type': 'application/json' },
        body: JSON.stringify({ destination: 'acct_1', amount: 42000, currency: 'usd' }),
      });
    expect((await pay(`Bearer ${token}`)).status).toBe(201);
    // Refusals: a spent one-use token, a tampered one, a replayed subject token from the wrong client.
    expect((await pay(`Bearer ${token}`)).status).toBe(401);
    expect((await pay(`Bearer ${token.slice(0, -4)}AAAA`)).status).toBe(401);
    expect((await tokenRequest(services.issuer, world.otherAgent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(400);
    await services.runtime.audit.drain();
    expect(lines.filter((line) => line.includes('"request completed"')).length).toBeGreaterThanOrEqual(6);
    // Every JWT (client assertions, task and access tokens, DPoP proofs) starts with `eyJ`.
    for (const secret of ['eyJ', UPSTREAM_SECRET, token.split('.')[2], task.task_token.split('.')[2]]) {
      expect(lines.filter((line) => line.includes(secret))).toEqual([]);
    }
  });

  it('never logs a connect link (a one-time bearer capability), whatever its spelling', async () => {
    const links = [randomBytes(32).toString('base64url'), randomBytes(32).toString('base64url')];
    const answers = [await fetch(`${services.issuer}/connect/${links[0]}`), await fetch(`${services.issuer}/CONNECT/${links[1]}`)];
    for (const answer of answers) expect(answer.status).toBe(400);
    const logged = await eventually(
      () => lines.filter((line) => line.includes('"request completed"') && /connect\//i.test(line)),
      (found) => found.length >= 2,
    );
    expect(logged.length).toBeGreaterThanOrEqual(2);
    for (const link of links) expect(lines.join('\n')).not.toContain(link);
  });
});

describe('faults: /metrics behind WRIT_METRICS_TOKEN', () => {
  let services: TestServices;
  const token = randomBytes(32).toString('base64url');

  beforeAll(async () => {
    services = await startTestServices({ gateway: createGatewayApp, env: { WRIT_METRICS_TOKEN: token } });
  });
  afterAll(async () => {
    await services?.close();
  });

  it('answers the scrape only with the token, on every service; probes stay open', async () => {
    for (const url of [services.authUrl, services.gatewayUrl]) {
      for (const authorization of [undefined, 'Bearer wrong-token-wrong-token-wrong-token', `Basic ${token}`, `Bearer ${token}x`]) {
        const refused = await fetch(`${url}/metrics`, { headers: authorization ? { authorization } : {} });
        expect(refused.status).toBe(401);
        expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer /);
        expect(await refused.text()).not.toContain('writ_');
      }
      const scraped = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(scraped.status).toBe(200);
      expect(await scraped.text()).toContain('writ_http_requests_total');
      expect((await fetch(`${url}/health/live`)).status).toBe(200);
    }
  });
});

describe('faults: every pooled connection busy', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp, env: { WRIT_DB_POOL_SIZE: '2', WRIT_DB_CHECKOUT_TIMEOUT_MS: '500' } });
  });
  afterAll(async () => {
    await services?.close();
  });

  it('answers 503 with Retry-After after the checkout deadline, then serves again once a connection is free', async () => {
    const held = await Promise.all([services.runtime.pool.connect(), services.runtime.pool.connect()]);
    try {
      const answers = await Promise.all(
        Array.from({ length: 10 }, () => fetch(`${services.adminUrl}/v1/agents`, { headers: { authorization: `Bearer ${services.adminToken}` } })),
      );
      for (const answer of answers) {
        expect(answer.status).toBe(503);
        expect(answer.headers.get('retry-after')).toMatch(/^[0-9]+$/);
      }
      expect(services.runtime.pool.waitingCount).toBe(0);
    } finally {
      for (const client of held) client.release();
    }
    expect((await fetch(`${services.adminUrl}/v1/agents`, { headers: { authorization: `Bearer ${services.adminToken}` } })).status).toBe(200);
  });
});
