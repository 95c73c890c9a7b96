import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { sample, scrape } from './support/metrics';
import { createTask, exchangeFields, type World } from './support/grant-flow';
import { http, type TestResponse, tokenRequest } from './support/oauth-client';
import { seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, type TestServices } from './support/test-services';

const CLIENT_SECRET = `cc-secret-${randomBytes(8).toString('hex')}`;
const OPERATIONS = [{ name: 'items.list', method: 'GET', path: '/api/items', risk: 'read', constraints: {} }];

/**
 * A provider with a client-credentials token endpoint that counts its requests (and can answer
 * `503`/`429` with a `Retry-After`) and an API that accepts the tokens it issued, unless told to
 * refuse every token (`401`) or they were revoked.
 */
class Provider {
  tokenRequests = 0;
  /** The token endpoint's answer: tokens, or an outage with this status and `Retry-After` (none when `undefined`). */
  outage: { status: number; retryAfter: string | undefined } | undefined;
  refusesEveryToken = false;
  private valid = new Set<string>();
  private readonly server: Server;
  url = '';

  constructor() {
    this.server = createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        if (request.url === '/oauth/token') {
          this.tokenRequests += 1;
          if (this.outage) {
            response.writeHead(this.outage.status, {
              'content-type': 'application/json',
              ...(this.outage.retryAfter !== undefined ? { 'retry-after': this.outage.retryAfter } : {}),
            });
            return void response.end('{"error":"temporarily_unavailable"}');
          }
          const token = `cc_at_${randomBytes(8).toString('hex')}`;
          this.valid.add(token);
          return json(response, 200, { access_token: token, token_type: 'Bearer', expires_in: 3600 });
        }
        const token = (request.headers.authorization ?? '').replace(/^Bearer /, '');
        if (this.refusesEveryToken || !this.valid.has(token)) {
          response.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
          return void response.end();
        }
        json(response, 200, { items: [] });
      });
    });
  }

  async start(): Promise<this> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  revokeTokens(): void {
    this.valid = new Set();
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function json(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

/**
 * The gateway is polite to client-credentials token endpoints: a `Retry-After` on a `429`/`503`
 * is heeded (no fetch before it, per connector, whatever the callers), and an upstream refusing
 * every token does not make every agent call a token request (one refetch per 30 s per
 * connector for tokens it never accepted; a token it accepted and then refused, a revocation,
 * is refetched at once). A token endpoint failing without `Retry-After` (`5xx`, unreachable) is
 * backed off as a connected account's refresh is: 5 s, doubling, per connector and instance.
 */
describe('gateway: client-credentials token requests an upstream asked for, and no more', () => {
  let services: TestServices;
  let world: World;
  const providers = new Map<string, Provider>();

  beforeAll(async () => {
    services = await startTestServices({ gateway: createGatewayApp });
    const { pool, masterKey } = services.runtime;
    world = {
      agent: await seedAgent(pool, 'agent-1'),
      otherAgent: await seedAgent(pool, 'agent-2'),
      orchestrator: await seedOrchestrator(pool, 'orch-1', ['agent-1', 'agent-2']),
    };
    for (const id of ['refusing', 'revoking', 'busy-503', 'busy-429', 'garbage', 'down-500', 'down-crowd']) {
      const provider = await new Provider().start();
      providers.set(id, provider);
      await seedConnector(pool, id, OPERATIONS, provider.url);
      await setConnectorCredential(pool, masterKey, id, {
        type: 'oauth2_client_credentials',
        token_url: `${provider.url}/oauth/token`,
        client_id: 'writ',
        client_secret: CLIENT_SECRET,
      });
    }
  });

  afterAll(async () => {
    await services?.close();
    for (const provider of providers.values()) await provider.close();
  });

  /** A gateway credential for `connector`'s read operation (usable for several calls). */
  async function credentialFor(connector: string): Promise<string> {
    const detail = { type: 'connector', connector, actions: ['items.list'] };
    const task = await createTask(services, world.orchestrator, { allowed: [detail], purpose: `list items of ${connector}` });
    const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [detail]));
    if (response.status !== 200) throw new Error(`exchange failed: ${response.text}`);
    return response.body.access_token as string;
  }
  const call = (connector: string, credential: string): Promise<TestResponse> =>
    http(`${services.gatewayUrl}/connectors/${connector}/api/items`, { headers: { authorization: `Bearer ${credential}` } });
  const inParallel = (connector: string, credential: string, count: number) => Promise.all(Array.from({ length: count }, () => call(connector, credential)));
  async function inSequence(connector: string, credential: string, count: number): Promise<TestResponse[]> {
    const responses: TestResponse[] = [];
    for (let index = 0; index < count; index += 1) responses.push(await call(connector, credential));
    return responses;
  }
  const retryAfter = (response: TestResponse) => Number(response.headers.get('retry-after'));

  it('an upstream refusing every token: 20 calls (parallel and in sequence) make two token requests, then 503 with Retry-After', async () => {
    const provider = providers.get('refusing')!;
    provider.refusesEveryToken = true;
    const credential = await credentialFor('refusing');
    // The first fetch, then one refetch for the 401 (never forced before), shared by the parallel calls.
    const first = await inParallel('refusing', credential, 8);
    expect(provider.tokenRequests).toBe(2);
    for (const response of first) expect([401, 503]).toContain(response.status);
    const later = [...(await inParallel('refusing', credential, 6)), ...(await inSequence('refusing', credential, 6))];
    for (const response of later) {
      expect(response.status).toBe(503);
      expect(response.body).toMatchObject({ error: 'temporarily_unavailable' });
      expect(retryAfter(response)).toBeGreaterThanOrEqual(1);
      expect(retryAfter(response)).toBeLessThanOrEqual(30);
      expect(response.text).not.toContain(CLIENT_SECRET);
      expect(response.text).not.toContain('cc_at_');
    }
    expect(provider.tokenRequests).toBe(2);
  });

  it('a token the upstream accepted and then refused (a revocation) is refetched at once, twice within 30 s', async () => {
    const provider = providers.get('revoking')!;
    const credential = await credentialFor('revoking');
    expect((await inParallel('revoking', credential, 4)).map((response) => response.status)).toEqual([200, 200, 200, 200]);
    expect(provider.tokenRequests).toBe(1);
    for (const round of [2, 3]) {
      provider.revokeTokens();
      const responses = await inParallel('revoking', credential, 6);
      expect(responses.map((response) => response.status)).toEqual(new Array(6).fill(200));
      expect(provider.tokenRequests).toBe(round);
    }
  });

  it.each([
    ['busy-503', 503, () => '120', 120],
    ['busy-429', 429, () => new Date(Date.now() + 600_000).toUTCString(), 600],
  ])(
    "a token endpoint's Retry-After (%s) is heeded: one request for parallel and later calls, all 503 with its Retry-After",
    async (connector, status, value, seconds) => {
      const provider = providers.get(connector)!;
      provider.outage = { status, retryAfter: value() };
      const credential = await credentialFor(connector);
      const responses = [...(await inParallel(connector, credential, 10)), ...(await inSequence(connector, credential, 5))];
      expect(provider.tokenRequests).toBe(1);
      for (const response of responses) {
        expect(response.status).toBe(503);
        expect(response.body).toMatchObject({ error: 'temporarily_unavailable' });
        expect(retryAfter(response)).toBeGreaterThan(seconds - 5);
        expect(retryAfter(response)).toBeLessThanOrEqual(seconds);
        expect(response.text).not.toContain(CLIENT_SECRET);
      }
      // The provider back before its own Retry-After: still not asked.
      provider.outage = undefined;
      expect((await call(connector, credential)).status).toBe(503);
      expect(provider.tokenRequests).toBe(1);
    },
  );

  it('a Retry-After that is not one is ignored: the backoff alone applies (503, at most 5 s), then the next call asks again', async () => {
    const provider = providers.get('garbage')!;
    provider.outage = { status: 503, retryAfter: 'in a minute' };
    const credential = await credentialFor('garbage');
    const response = await call('garbage', credential);
    expect(response.status).toBe(503);
    expect(retryAfter(response)).toBeGreaterThanOrEqual(1);
    expect(retryAfter(response)).toBeLessThanOrEqual(5);
    provider.outage = undefined;
    await new Promise((resolve) => setTimeout(resolve, retryAfter(response) * 1000 + 100));
    expect((await call('garbage', credential)).status).toBe(200);
    expect(provider.tokenRequests).toBe(2);
  });

  /** `writ_upstream_token_deferred_total{connector, reason="backoff"}` on the gateway. */
  const deferred = async (connector: string) =>
    sample(await scrape(services.gatewayUrl), 'writ_upstream_token_deferred_total', { connector, reason: 'backoff' }) ?? 0;

  it('a token endpoint answering 500 without Retry-After: 10 calls in sequence ask it once, all 503 with Retry-After; again after the backoff', async () => {
    const provider = providers.get('down-500')!;
    provider.outage = { status: 500, retryAfter: undefined };
    const credential = await credentialFor('down-500');
    const responses = await inSequence('down-500', credential, 10);
    expect(provider.tokenRequests).toBe(1);
    for (const response of responses) {
      expect(response.status).toBe(503);
      expect(response.body).toMatchObject({ error: 'temporarily_unavailable' });
      expect(retryAfter(response)).toBeGreaterThanOrEqual(1);
      expect(retryAfter(response)).toBeLessThanOrEqual(5);
      expect(response.text).not.toContain(CLIENT_SECRET);
    }
    expect(responses[0].body.error_description).toMatch(
      /token endpoint of connector down-500 is unavailable \(it answered 500\): it is not asked again for \d s/,
    );
    expect(responses[9].body.error_description).toMatch(
      /was unavailable at the last token request \(upstream_token_status_500\): it is not asked again for \d s/,
    );
    expect(await deferred('down-500')).toBe(9);
    // The calls' events say why, with nothing sent.
    const { rows } = await services.runtime.pool.query<{ data: { status: number; reason: string } }>(
      `SELECT data FROM audit_events WHERE type = 'gateway.call' AND connector_id = 'down-500' ORDER BY seq`,
    );
    expect(rows.map((row) => [row.data.status, row.data.reason])).toEqual([
      [503, 'upstream_token_status_500'],
      ...new Array(9).fill([503, 'upstream_token_backoff']),
    ]);

    // The backoff over (at most 5 s after the first failure), the next call asks once more: down still, a longer backoff.
    await new Promise((resolve) => setTimeout(resolve, retryAfter(responses[9]) * 1000 + 100));
    const again = await call('down-500', credential);
    expect(again.status).toBe(503);
    expect(provider.tokenRequests).toBe(2);
    expect(retryAfter(again)).toBeGreaterThan(5);
    expect(retryAfter(again)).toBeLessThanOrEqual(10);
    expect((await call('down-500', credential)).status).toBe(503);
    expect(provider.tokenRequests).toBe(2);
  }, 20_000);

  it('a token endpoint down: 8 calls at once ask it once, all 503 with Retry-After; back after the backoff, one request serves every call', async () => {
    const provider = providers.get('down-crowd')!;
    provider.outage = { status: 502, retryAfter: undefined };
    const credential = await credentialFor('down-crowd');
    const responses = await inParallel('down-crowd', credential, 8);
    expect(provider.tokenRequests).toBe(1);
    for (const response of responses) {
      expect(response.status).toBe(503);
      expect(retryAfter(response)).toBeGreaterThanOrEqual(1);
      expect(retryAfter(response)).toBeLessThanOrEqual(5);
    }
    provider.outage = undefined;
    expect((await call('down-crowd', credential)).status).toBe(503);
    expect(provider.tokenRequests).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, Math.max(...responses.map(retryAfter)) * 1000 + 100));
    const recovered = await inParallel('down-crowd', credential, 8);
    expect(recovered.map((response) => response.status)).toEqual(new Array(8).fill(200));
    expect(provider.tokenRequests).toBe(2);
  }, 20_000);
});
