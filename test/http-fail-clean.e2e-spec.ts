import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultPolicyPath } from '@writ/policy';
import { gzipSync } from 'node:zlib';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, TestResponse, tokenRequest } from './support/oauth-client';
import { seedAgent, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

/** A response read off a raw socket: its status, headers (lower-case names) and body. */
interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends `text` as it is over TCP (for request targets `fetch` cannot send) and reads the one response. */
function rawRequest(baseUrl: string, text: string): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    // Written, not ended: a half-closed socket aborts a request still in flight. `Connection: close` ends it.
    const socket = connect(Number(port), hostname, () => socket.write(text));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const all = Buffer.concat(chunks).toString('latin1');
      const split = all.indexOf('\r\n\r\n');
      const [statusLine, ...lines] = all.slice(0, split).split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: all.slice(split + 4) });
    });
  });
}

/**
 * Fail closed and clean at the HTTP edge: what the frameworks refuse (an unknown
 * `Content-Encoding`, a request target that is not a path) is answered with its 4xx in the
 * service's error shape, never a 500; a body the JSON APIs cannot read is refused, never
 * ignored.
 */
describe('HTTP edge fails clean', () => {
  let services: TestServices;
  let upstream: MockUpstream;
  let world: World;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream('sk_live_fail_clean_7c1d');
    services = await startTestServices({ admin: createAdminApp, gateway: createGatewayApp });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: 'sk_live_fail_clean_7c1d' });
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  const statusOf = async (id: string) =>
    (await services.runtime.pool.query<{ status: string }>('SELECT status FROM agents WHERE id = $1', [id])).rows[0]?.status;
  const expectNoServerError = (response: TestResponse) => {
    expect(response.status).toBeLessThan(500);
    expect(response.body.error).not.toBe('server_error');
  };

  describe('an unknown Content-Encoding is a 415, not a 500', () => {
    it('at the token endpoint: 415 invalid_request in the OAuth shape', async () => {
      const response = await http(`${services.issuer}/oauth2/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'foo' },
        body: 'grant_type=client_credentials',
      });
      expectNoServerError(response);
      expect(response.status).toBe(415);
      expect(response.body).toEqual({ error: 'invalid_request', error_description: expect.stringContaining('content-encoding') });
    });

    it('at the admin API: 415 invalid_request, and nothing is created', async () => {
      const response = await http(`${services.adminUrl}/v1/agents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/json', 'content-encoding': 'foo' },
        body: JSON.stringify({ id: 'enc-agent', name: 'enc', jwks: { keys: [] } }),
      });
      expectNoServerError(response);
      expect(response.status).toBe(415);
      expect(response.body).toEqual({ error: 'invalid_request', error_description: expect.stringContaining('content-encoding') });
      expect(await statusOf('enc-agent')).toBeUndefined();
    });

    it('at the Tasks API: 415 invalid_request', async () => {
      const response = await http(`${services.issuer}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'foo' },
        body: '{}',
      });
      expectNoServerError(response);
      expect(response.status).toBe(415);
      expect(response.body.error_description).toContain('content-encoding');
    });
  });

  describe('the gateway never checks one body and forwards another', () => {
    const PAYOUT = '{"destination":"acct_1","amount":42000,"currency":"usd"}';
    it.each([
      ['an unknown encoding', 'foo', Buffer.from(PAYOUT)],
      ['gzip', 'gzip', gzipSync(PAYOUT)],
    ])('a constrained body with %s is a 415 naming content-encoding, and is not forwarded', async (_name, encoding, body) => {
      const task = await createTask(services, world.orchestrator);
      const credential = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
      expect(credential.status).toBe(200);
      const before = upstream.received.length;
      const response = await http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${credential.body.access_token}`, 'content-type': 'application/json', 'content-encoding': encoding },
        body: new Uint8Array(body),
      });
      expect(response.status).toBe(415);
      expect(response.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringContaining('content-encoding') });
      expect(upstream.received.length).toBe(before);
    });
  });

  describe('a request target that is not a path is a 400, not a 500', () => {
    const get = (target: string) =>
      rawRequest(services.authUrl, `GET ${target} HTTP/1.1\r\nHost: ${new URL(services.authUrl).host}\r\nConnection: close\r\n\r\n`);

    it.each(['http://a:99999/connect/callback?state=a', 'http://evil.example/connect/callback?state=a'])(
      'the connect callback refuses the absolute-form target %s in the JSON error shape',
      async (target) => {
        const response = await get(target);
        expect(response.status).toBe(400);
        expect(response.headers['content-type']).toMatch(/^application\/json/);
        expect(JSON.parse(response.body)).toEqual({ error: 'invalid_request', error_description: expect.stringContaining('request target') });
      },
    );

    it.each([
      ['the authorization server', () => services.authUrl],
      ['the admin API', () => services.adminUrl],
    ])('%s answers a target no URL parser reads with a JSON 400, not an HTML 404', async (_name, base) => {
      // The service's own Host: another one (`x`) is refused first, 421 (WRIT_ALLOWED_HOSTS).
      const response = await rawRequest(
        base(),
        `GET http://[x/connect/callback?state=a HTTP/1.1\r\nHost: ${new URL(base()).host}\r\nConnection: close\r\n\r\n`,
      );
      expect(response.status).toBe(400);
      expect(response.headers['content-type']).toMatch(/^application\/json/);
      expect(JSON.parse(response.body)).toEqual({ error: 'invalid_request', error_description: expect.stringContaining('request target') });
    });

    it('the connect callback still reads an origin-form target (an unknown state is its own refusal)', async () => {
      const response = await get('/connect/callback?state=a');
      expect(response.status).toBeLessThan(500);
      expect(response.body).not.toContain('request target');
    });
  });

  describe('a body the JSON APIs cannot read is refused, never ignored', () => {
    const patchAgent = (id: string, headers: Record<string, string>, body: RequestInit['body']) =>
      http(`${services.adminUrl}/v1/agents/${id}`, { method: 'PATCH', headers: { authorization: `Bearer ${services.adminToken}`, ...headers }, body });
    const SUSPEND = '{"status":"suspended"}';

    it.each([
      ['text/plain', { 'content-type': 'text/plain' }, SUSPEND],
      ['a form', { 'content-type': 'application/x-www-form-urlencoded' }, 'status=suspended'],
      // A byte body: fetch sends no content-type at all.
      ['no content type', {}, new TextEncoder().encode(SUSPEND)],
    ] as Array<[string, Record<string, string>, RequestInit['body']]>)(
      'PATCH /v1/agents/{id} as %s is a 415 naming content-type, and the agent stays active',
      async (_label, headers, body) => {
        const id = `ct-agent-${Object.keys(headers).length}-${String(headers['content-type'] ?? 'none').replace(/\W/g, '')}`;
        await seedAgent(services.runtime.pool, id);
        const response = await patchAgent(id, headers, body);
        expect(response.status).toBe(415);
        expect(response.body).toEqual({ error: 'invalid_request', error_description: expect.stringContaining('content-type') });
        expect(await statusOf(id)).toBe('active');
      },
    );

    it('the same PATCH as JSON suspends the agent (the control)', async () => {
      await seedAgent(services.runtime.pool, 'ct-agent-json');
      const response = await patchAgent('ct-agent-json', { 'content-type': 'application/json' }, SUSPEND);
      expect(response.status).toBe(200);
      expect(await statusOf('ct-agent-json')).toBe('suspended');
    });

    it('POST /v1/tasks with a text/plain body is a 415 naming content-type, and no task is stored', async () => {
      const before = (await services.runtime.pool.query<{ n: string }>('SELECT count(*) AS n FROM tasks')).rows[0].n;
      const response = await http(`${services.issuer}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"agent_id":"a"}' });
      expect(response.status).toBe(415);
      expect(response.body.error_description).toContain('content-type');
      expect((await services.runtime.pool.query<{ n: string }>('SELECT count(*) AS n FROM tasks')).rows[0].n).toBe(before);
    });

    it('POST /v1/keys/rotate with options it does not read is a 400 naming body, and no key rotates', async () => {
      const before = (await services.runtime.pool.query<{ kid: string }>(`SELECT kid FROM signing_keys WHERE status = 'active'`)).rows;
      const response = await http(`${services.adminUrl}/v1/keys/rotate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/json' },
        body: '{"alg":"HS256"}',
      });
      expect(response.status).toBe(400);
      expect(response.body).toEqual({
        error: 'invalid_request',
        message: 'the request body is invalid',
        fields: [{ field: 'body', message: 'this endpoint takes no body' }],
      });
      expect((await services.runtime.pool.query<{ kid: string }>(`SELECT kid FROM signing_keys WHERE status = 'active'`)).rows).toEqual(before);
    });

    it('an empty JSON object there is still accepted, and a body without a token is still a 401 first', async () => {
      const rotate = (headers: Record<string, string>, body: string) =>
        http(`${services.adminUrl}/v1/keys/rotate`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
      expect((await rotate({ authorization: `Bearer ${services.adminToken}` }, '{}')).status).toBe(201);
      expect((await rotate({}, '{"alg":"HS256"}')).status).toBe(401);
    });

    it('a policy bundle in another type is a 415 naming the bundle types', async () => {
      const response = await http(`${services.adminUrl}/v1/policies/active`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'text/plain' },
        body: 'not a bundle',
      });
      expect(response.status).toBe(415);
      expect(response.body.error_description).toContain('application/gzip');
    });
  });

  describe('a refused query is reported as the query', () => {
    it('GET /v1/agents?limit=0 names limit under "the query is invalid"', async () => {
      const response = await http(`${services.adminUrl}/v1/agents?limit=0`, { headers: { authorization: `Bearer ${services.adminToken}` } });
      expect(response.status).toBe(400);
      expect(response.body).toMatchObject({ error: 'invalid_request', message: 'the query is invalid', fields: [{ field: 'limit' }] });
    });

    it('an unknown query parameter is named under "the query is invalid"', async () => {
      const response = await http(`${services.adminUrl}/v1/agents?bogus=1`, { headers: { authorization: `Bearer ${services.adminToken}` } });
      expect(response.status).toBe(400);
      expect(response.body).toEqual({ error: 'invalid_request', message: 'the query is invalid', fields: [{ field: 'bogus', message: 'unknown field' }] });
    });
  });

  describe('keys or policy unavailable is a 503 with Retry-After, not a 500', () => {
    it('no active signing key: the token endpoint answers 503 temporarily_unavailable, and issues once a key is back', async () => {
      const orchestrator = await seedOrchestrator(services.runtime.pool, 'fc-orchestrator');
      const { pool, signingKeys } = services.runtime;
      const { rows } = await pool.query<{ kid: string }>(`UPDATE signing_keys SET status = 'retiring' WHERE status = 'active' RETURNING kid`);
      await signingKeys.reload();
      try {
        const response = await tokenRequest(services.issuer, orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
        expect(response.status).toBe(503);
        expect(response.headers.get('retry-after')).toMatch(/^\d+$/);
        expect(response.body).toEqual({ error: 'temporarily_unavailable', error_description: expect.stringContaining('signing key') });
      } finally {
        await pool.query(`UPDATE signing_keys SET status = 'active' WHERE kid = ANY($1)`, [rows.map((row) => row.kid)]);
        await signingKeys.reload();
      }
      const again = await tokenRequest(services.issuer, orchestrator, { grant_type: 'client_credentials', scope: 'tasks' });
      expect(again.status).toBe(200);
    });

    it('PUT /v1/policies/data with the WRIT_POLICY file unreadable is a 503 with Retry-After, and changes nothing', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'writ-policy-'));
      const file = join(dir, 'bundle.tar.gz');
      await copyFile(defaultPolicyPath(), file);
      const own = await startTestServices({ admin: createAdminApp, env: { WRIT_POLICY: file } });
      try {
        const data = JSON.parse(JSON.stringify(own.policy.current().data)) as Record<string, unknown>;
        await rm(file);
        const response = await http(`${own.adminUrl}/v1/policies/data`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${own.adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ data }),
        });
        expect(response.status).toBe(503);
        expect(response.headers.get('retry-after')).toMatch(/^\d+$/);
        expect(response.body).toEqual({ error: 'temporarily_unavailable', error_description: expect.stringContaining('policy file') });
        expect(Number((await own.runtime.pool.query<{ n: string }>('SELECT count(*) AS n FROM policies')).rows[0].n)).toBe(0);
      } finally {
        await own.close();
        await rm(dir, { recursive: true, force: true });
      }
    });
  });
});
