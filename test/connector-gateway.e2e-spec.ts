import { createServer, request as httpRequest, ServerResponse } from 'node:http';
import { AddressInfo, connect } from 'node:net';
import { SignJWT } from 'jose';
import { GrantStateRepository } from '@writ/grants';
import { createClientKey } from '@writ/testing';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, World } from './support/grant-flow';
import { ChatUpstream, MockUpstream, startChatUpstream, startCodeHostUpstream, startMockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { PAYMENTS_OPERATIONS, seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

const PAYMENTS_SECRET = 'sk_live_payments_4f9a1c7e2b8d';
const CODE_SECRET = 'glpat-code-host-51b2e9d7';
const CHAT_SECRET = 'chat-client-secret-77aa13';

const PAYMENTS_CATALOGUE = [
  ...PAYMENTS_OPERATIONS,
  { name: 'balance.get', method: 'GET', path: '/v1/balance', risk: 'read', constraints: {} },
  { name: 'moved.get', method: 'GET', path: '/v1/moved', risk: 'read', constraints: {} },
  { name: 'slow.get', method: 'GET', path: '/v1/slow', risk: 'read', constraints: {} },
];
const CODE_CATALOGUE = [
  {
    name: 'issues.list',
    method: 'GET',
    path: '/repos/{owner}/{repo}/issues',
    risk: 'read',
    constraints: { repo: { in: 'path', field: 'repo', op: 'eq' }, per_page: { in: 'query', field: 'per_page', op: 'lte' } },
  },
];
const EXPORTS_CATALOGUE = [
  { name: 'export.get', method: 'GET', path: '/v1/export', risk: 'read', constraints: {} },
  { name: 'export.slow', method: 'GET', path: '/v1/export/slow', risk: 'read', constraints: {} },
];
/** What the exports upstream streams: 64 chunks of 64 KiB, each filled with its index. */
const EXPORT_CHUNKS = 64;
const EXPORT_CHUNK = 64 * 1024;
const CHAT_CATALOGUE = [
  { name: 'messages.post', method: 'POST', path: '/api/messages', risk: 'write', constraints: { channel: { in: 'body', field: 'channel', op: 'eq' } } },
];
const ALLOWED = [
  { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' } },
  { type: 'connector', connector: 'payments', actions: ['payouts.get', 'balance.get', 'moved.get', 'slow.get'] },
  { type: 'connector', connector: 'code', actions: ['issues.list'], constraints: { repo: 'writ', per_page: 50 } },
  { type: 'connector', connector: 'chat', actions: ['messages.post'], constraints: { channel: 'ops' } },
  { type: 'connector', connector: 'elsewhere', actions: ['balance.get'] },
  { type: 'connector', connector: 'exports', actions: ['export.get', 'export.slow'] },
];
const PAYOUT = { destination: 'acct_1', amount: 42000, currency: 'usd' };
const payoutDetail = (amountMax = 42000) => ({
  type: 'connector',
  connector: 'payments',
  actions: ['payouts.create'],
  constraints: { destination: 'acct_1', amount_max: amountMax, currency: 'usd' },
});

/** A raw HTTP/1.1 request whose target is sent exactly as given (fetch would normalise it). */
function rawRequest(
  base: string,
  method: string,
  target: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; text: string; headers: Record<string, unknown> }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        method,
        path: target,
        headers: { ...headers, ...(body ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
      },
      (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('connector gateway', () => {
  let services: TestServices;
  let world: World;
  let payments: MockUpstream;
  let elsewhere: MockUpstream;
  let code: MockUpstream;
  let chat: ChatUpstream;
  let exportsUpstream: MockUpstream;
  /** How each response of the exports upstream ended: `finished`, or `closed` by the gateway before. */
  const exportEnds: string[] = [];
  const responses: string[] = [];
  const logLines: string[] = [];

  beforeAll(async () => {
    elsewhere = await startMockUpstream(() => true, {});
    payments = await startPaymentsUpstream(PAYMENTS_SECRET, `${elsewhere.url}/steal`);
    code = await startCodeHostUpstream(CODE_SECRET);
    chat = await startChatUpstream('writ-gateway', CHAT_SECRET);
    exportsUpstream = await startMockUpstream(() => true, {
      'GET /v1/export': (_request, response) => streamExport(response, 0),
      'GET /v1/export/slow': (_request, response) => streamExport(response, 50),
    });
    services = await startTestServices({
      gateway: createGatewayApp,
      env: { WRIT_UPSTREAM_TIMEOUT_MS: '700', WRIT_GATEWAY_BODY_LIMIT: '4096' },
      logSink: (line) => logLines.push(line),
    });
    const { pool, masterKey } = services.runtime;
    const agent = await seedAgent(pool, 'agent-1');
    const otherAgent = await seedAgent(pool, 'agent-2');
    const orchestrator = await seedOrchestrator(pool, 'orch-1', ['agent-1', 'agent-2']);
    world = { agent, otherAgent, orchestrator };
    await seedConnector(pool, 'payments', PAYMENTS_CATALOGUE, payments.url);
    await seedConnector(pool, 'code', CODE_CATALOGUE, code.url);
    await seedConnector(pool, 'chat', CHAT_CATALOGUE, chat.url);
    await seedConnector(pool, 'elsewhere', PAYMENTS_CATALOGUE, 'http://127.0.0.1:9');
    await seedConnector(pool, 'exports', EXPORTS_CATALOGUE, exportsUpstream.url);
    await setConnectorCredential(pool, masterKey, 'exports', { type: 'bearer', token: 'sk_exports_0123456789' });
    await setConnectorCredential(pool, masterKey, 'payments', { type: 'bearer', token: PAYMENTS_SECRET });
    await setConnectorCredential(pool, masterKey, 'code', { type: 'header', name: 'PRIVATE-TOKEN', value: CODE_SECRET });
    await setConnectorCredential(pool, masterKey, 'chat', {
      type: 'oauth2_client_credentials',
      token_url: `${chat.url}/oauth/token`,
      client_id: 'writ-gateway',
      client_secret: CHAT_SECRET,
      scope: 'chat:write',
    });
    await setConnectorCredential(pool, masterKey, 'elsewhere', { type: 'bearer', token: 'sk_elsewhere_unused' });
  });

  afterAll(async () => {
    await services.close();
    for (const upstream of [payments, code, chat, elsewhere, exportsUpstream]) await upstream.close();
  });

  /** Streams the export with backpressure (`pauseMs` between chunks), noting how the response ended. */
  function streamExport(response: ServerResponse, pauseMs: number): void {
    response.on('close', () => exportEnds.push(response.writableFinished ? 'finished' : 'closed'));
    response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(EXPORT_CHUNKS * EXPORT_CHUNK) });
    let next = 0;
    const write = (): void => {
      while (next < EXPORT_CHUNKS && !response.destroyed) {
        const chunk = Buffer.alloc(EXPORT_CHUNK, next);
        next += 1;
        if (next === EXPORT_CHUNKS) {
          response.end(chunk);
          return;
        }
        const more = response.write(chunk);
        if (pauseMs > 0) {
          setTimeout(write, pauseMs).unref();
          return;
        }
        if (!more) {
          response.once('drain', write);
          return;
        }
      }
    };
    write();
  }

  const task = () => createTask(services, world.orchestrator, { allowed: ALLOWED });
  async function credential(details: unknown, taskToken?: string): Promise<{ token: string; taskId: string; taskToken: string }> {
    const declared = taskToken ? { task_token: taskToken, task_id: '' } : await task();
    const response = await tokenRequest(services.issuer, world.agent, exchangeFields(declared.task_token, [details]));
    if (response.status !== 200) throw new Error(`exchange failed: ${response.text}`);
    return { token: response.body.access_token, taskId: declared.task_id, taskToken: declared.task_token };
  }
  const gateway = async (method: string, path: string, token?: string, body?: unknown, headers: Record<string, string> = {}): Promise<TestResponse> => {
    const response = await http(`${services.gatewayUrl}${path}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    responses.push(response.text, JSON.stringify([...response.headers]));
    return response;
  };
  const seen = (upstream: MockUpstream) => upstream.received.length;

  describe('an allowed call', () => {
    it('injects the upstream credential, drops the agent credential and forwards exactly the checked request', async () => {
      const { token } = await credential(payoutDetail());
      const before = seen(payments);
      const body = JSON.stringify({ ...PAYOUT, reference: 'INV-42' });
      const response = await gateway('POST', '/connectors/payments/v1/payouts?idempotency=inv-42', token, body, {
        cookie: 'agent_session=1',
        'x-forwarded-for': '10.9.9.9',
        'x-trace': 'keep-me',
      });
      expect(response.status).toBe(201);
      expect(response.body).toMatchObject({ status: 'paid', destination: 'acct_1', amount: 42000 });
      expect(response.headers.get('set-cookie')).toBeNull();
      expect(response.headers.get('x-upstream')).toBe('payments');
      expect(payments.received.length).toBe(before + 1);
      const forwarded = payments.received[payments.received.length - 1];
      expect(forwarded.method).toBe('POST');
      expect(forwarded.url).toBe('/v1/payouts?idempotency=inv-42');
      expect(forwarded.headers.authorization).toBe(`Bearer ${PAYMENTS_SECRET}`);
      expect(forwarded.body.toString('utf8')).toBe(body);
      expect(forwarded.headers.cookie).toBeUndefined();
      expect(forwarded.headers['x-forwarded-for']).toBeUndefined();
      expect(forwarded.headers['x-trace']).toBe('keep-me');
      expect(JSON.stringify(forwarded.headers)).not.toContain(token.slice(-20));
    });

    it('spends a write credential once: the second use is refused and the upstream sees nothing', async () => {
      const { token } = await credential(payoutDetail());
      expect((await gateway('POST', '/connectors/payments/v1/payouts', token, PAYOUT)).status).toBe(201);
      const before = seen(payments);
      const reuse = await gateway('POST', '/connectors/payments/v1/payouts', token, PAYOUT);
      expect(reuse.status).toBe(401);
      expect(reuse.headers.get('www-authenticate')).toMatch(/^Bearer realm="writ", error="invalid_token"/);
      expect(reuse.body).toEqual({ error: 'invalid_token', error_description: 'the use budget of this credential is spent' });
      expect(seen(payments)).toBe(before);
    });

    it('lets only one of several concurrent calls spend a one-use credential', async () => {
      const { token } = await credential(payoutDetail());
      const before = seen(payments);
      const results = await Promise.all(Array.from({ length: 6 }, () => gateway('POST', '/connectors/payments/v1/payouts', token, PAYOUT)));
      expect(results.filter((result) => result.status === 201)).toHaveLength(1);
      expect(results.filter((result) => result.status === 401)).toHaveLength(5);
      expect(seen(payments)).toBe(before + 1);
    });

    it('lets a read credential read repeatedly and checks path constraints', async () => {
      const { token } = await credential({ type: 'connector', connector: 'code', actions: ['issues.list'], constraints: { repo: 'writ', per_page: 20 } });
      for (let i = 0; i < 2; i += 1) {
        const response = await gateway('GET', '/connectors/code/repos/acme/writ/issues?per_page=20', token);
        expect(response.status).toBe(200);
      }
      const forwarded = code.received[code.received.length - 1];
      expect(forwarded.headers['private-token']).toBe(CODE_SECRET);
      expect(forwarded.url).toBe('/repos/acme/writ/issues?per_page=20');
      const other = await gateway('GET', '/connectors/code/repos/acme/secrets/issues?per_page=20', token);
      expect(other.status).toBe(403);
      expect(other.body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:repo' });
      const bigger = await gateway('GET', '/connectors/code/repos/acme/writ/issues?per_page=100', token);
      expect(bigger.body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:per_page' });
      const repeated = await gateway('GET', '/connectors/code/repos/acme/writ/issues?per_page=1&per_page=100', token);
      expect(repeated.body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:per_page' });
    });

    it('fetches an oauth2_client_credentials token once, reuses it, and refreshes it once on a 401', async () => {
      const message = { channel: 'ops', text: 'deploy done' };
      const first = await credential({ type: 'connector', connector: 'chat', actions: ['messages.post'], constraints: { channel: 'ops' } });
      expect((await gateway('POST', '/connectors/chat/api/messages', first.token, message)).status).toBe(200);
      const second = await credential({ type: 'connector', connector: 'chat', actions: ['messages.post'], constraints: { channel: 'ops' } });
      expect((await gateway('POST', '/connectors/chat/api/messages', second.token, message)).status).toBe(200);
      expect(chat.tokenRequests).toBe(1);
      chat.revokeTokens();
      const third = await credential({ type: 'connector', connector: 'chat', actions: ['messages.post'], constraints: { channel: 'ops' } });
      const response = await gateway('POST', '/connectors/chat/api/messages', third.token, message);
      expect(response.status).toBe(200);
      expect(chat.tokenRequests).toBe(2);
      const apiCalls = chat.received.filter((entry) => entry.url === '/api/messages');
      expect(apiCalls[apiCalls.length - 1].headers.authorization).toMatch(/^Bearer chat_at_/);
    });

    it('shares one oauth2_client_credentials refresh between concurrent calls refused with a 401', async () => {
      const message = { channel: 'ops', text: 'rotate' };
      const detail = { type: 'connector', connector: 'chat', actions: ['messages.post'], constraints: { channel: 'ops' } };
      const [warm, ...tokens] = await Promise.all(Array.from({ length: 9 }, () => credential(detail)));
      expect((await gateway('POST', '/connectors/chat/api/messages', warm.token, message)).status).toBe(200);
      const before = chat.tokenRequests;
      chat.revokeTokens();
      // Every call sends the revoked token, gets a 401, and asks for a fresh one: one fetch serves them all.
      const responses = await Promise.all(tokens.map(({ token }) => gateway('POST', '/connectors/chat/api/messages', token, message)));
      expect(responses.map((response) => response.status)).toEqual(tokens.map(() => 200));
      expect(chat.tokenRequests).toBe(before + 1);
    });

    it('uses a rotated credential on the next call', async () => {
      const { pool, masterKey } = services.runtime;
      const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      await setConnectorCredential(pool, masterKey, 'payments', { type: 'bearer', token: `${PAYMENTS_SECRET}_old` });
      expect((await gateway('GET', '/connectors/payments/v1/balance', token)).status).toBe(401);
      await setConnectorCredential(pool, masterKey, 'payments', { type: 'bearer', token: PAYMENTS_SECRET });
      expect((await gateway('GET', '/connectors/payments/v1/balance', token)).status).toBe(200);
    });
  });

  describe('refusals before anything reaches the upstream', () => {
    let before: number;
    beforeEach(() => (before = seen(payments)));
    afterEach(() => expect(seen(payments)).toBe(before));

    it('asks for a token when there is none', async () => {
      const response = await gateway('GET', '/connectors/payments/v1/balance');
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toContain('Bearer realm="writ"');
      expect(response.body.error).toBe('invalid_token');
    });

    it('refuses a forged token signed by another key under our kid', async () => {
      const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
      const attacker = await createClientKey();
      const forged = await new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: services.runtime.signingKeys.activeKid() })
        .sign(attacker.privateKey);
      const response = await gateway('GET', '/connectors/payments/v1/balance', forged);
      expect(response.status).toBe(401);
      expect(response.body.error).toBe('invalid_token');
    });

    it('refuses a token whose grant was widened after signing', async () => {
      const { token } = await credential(payoutDetail(1000));
      const [header, payload, signature] = token.split('.');
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      claims.authorization_details[0].constraints.amount_max = 10_000_000;
      const widened = [header, Buffer.from(JSON.stringify(claims)).toString('base64url'), signature].join('.');
      const response = await gateway('POST', '/connectors/payments/v1/payouts', widened, { ...PAYOUT, amount: 900_000 });
      expect(response.status).toBe(401);
    });

    it('refuses a token for another connector, a task token, and an expired token', async () => {
      const { token, taskToken } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      expect((await gateway('GET', '/connectors/elsewhere/v1/balance', token)).status).toBe(401);
      expect((await gateway('GET', '/connectors/payments/v1/balance', taskToken)).status).toBe(401);
      const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
      const now = Math.floor(Date.now() / 1000);
      const { token: expired } = await services.runtime.signingKeys.sign({ ...claims, iat: now - 600, exp: now - 300 }, { typ: 'at+jwt' });
      const response = await gateway('GET', '/connectors/payments/v1/balance', expired);
      expect(response.status).toBe(401);
      expect(response.body.error_description).toBe('the access token has expired');
    });

    it('refuses a credential as soon as its task is completed', async () => {
      const declared = await task();
      const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] }, declared.task_token);
      expect((await gateway('GET', '/connectors/payments/v1/balance', token)).status).toBe(200);
      before = seen(payments);
      const tasksToken = (await tokenRequest(services.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' })).body.access_token;
      expect((await sendJson('POST', `${services.issuer}/v1/tasks/${declared.task_id}/complete`, undefined, tasksToken)).status).toBe(200);
      const response = await gateway('GET', '/connectors/payments/v1/balance', token);
      expect(response.status).toBe(401);
      expect(response.body.error_description).toMatch(/revoked|completed/);
    });

    it('re-checks a batch of credentials by primary key: live, revoked, task completed, unknown', async () => {
      const live = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      const revoked = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      const declared = await task();
      const ended = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] }, declared.task_token);
      const jtiOf = (token: string) => (JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { jti: string }).jti;
      const pool = services.runtime.pool;
      await pool.query('UPDATE access_tokens SET revoked_at = now() WHERE jti = $1', [jtiOf(revoked.token)]);
      await pool.query("UPDATE tasks SET status = 'completed' WHERE id = $1", [declared.task_id]);
      const client = await pool.connect();
      try {
        const jtis = [jtiOf(live.token), jtiOf(revoked.token), jtiOf(ended.token), 'no-such-jti', jtiOf(live.token)];
        const verdicts = await new GrantStateRepository(pool, services.runtime.rowIntegrity).recheckAt(
          client,
          jtis.map((jti) => ({ jti, connectorVersion: null })),
        );
        expect(verdicts.map((verdict) => verdict === 'live')).toEqual([true, false, false, false, true]);
      } finally {
        client.release();
      }
    });

    it('re-checks the same way inlined in the audit batch: connector versions, hostile jtis as literals, NUL left to parameters', async () => {
      const live = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      const jti = (JSON.parse(Buffer.from(live.token.split('.')[1], 'base64url').toString('utf8')) as { jti: string }).jti;
      const pool = services.runtime.pool;
      const { rows } = await pool.query<{ version: string }>(`SELECT version::text AS version FROM connectors WHERE id = 'payments'`);
      const current = rows[0].version;
      const checks = [
        { jti, connectorVersion: current },
        { jti, connectorVersion: String(Number(current) + 1) },
        { jti, connectorVersion: null },
        { jti: `x'); UPDATE access_tokens SET revoked_at = NULL; --`, connectorVersion: null },
        { jti: `back\\slash ' E'`, connectorVersion: current },
      ];
      const grants = new GrantStateRepository(pool, services.runtime.rowIntegrity);
      const client = await pool.connect();
      try {
        const expected = ['live', 'stale', 'live', 'dead', 'dead'];
        expect(await grants.recheckAt(client, checks)).toEqual(expected);
        const sql = grants.recheckInline.sql(checks, (value) => client.escapeLiteral(value))!;
        expect(grants.recheckInline.parse((await client.query(sql)).rows, checks)).toEqual(expected);
        expect(grants.recheckInline.sql([{ jti, connectorVersion: '1; DROP TABLE tasks' }], (value) => client.escapeLiteral(value))).toBeUndefined();
      } finally {
        client.release();
      }
      // Through the audit batch: a NUL cannot be a literal, the parameterised statement runs instead.
      const { result } = await services.runtime.audit
        .recordWithBatched(
          { kind: 'spec-recheck', params: { jti: 'a\u0000b', connectorVersion: null }, run: grants.recheckAt, inline: grants.recheckInline },
          () => [],
        )
        .catch((error: unknown) => ({ result: error instanceof Error ? error.message : 'failed' }));
      expect(result).not.toBe('live');
    });

    it('refuses an operation outside the token actions, and a path outside the catalogue', async () => {
      const { token } = await credential(payoutDetail());
      const action = await gateway('GET', '/connectors/payments/v1/balance', token);
      expect(action.status).toBe(403);
      expect(action.headers.get('www-authenticate')).toMatch(/error="insufficient_scope"/);
      expect(action.body).toEqual({
        error: 'insufficient_scope',
        error_description: 'operation balance.get is not granted by this credential',
        rule: 'action',
      });
      const unknown = await gateway('DELETE', '/connectors/payments/v1/payouts', token);
      expect(unknown.body).toMatchObject({ error: 'insufficient_scope', rule: 'operation' });
    });

    it.each([
      ['a higher amount', { ...PAYOUT, amount: 42001 }, 'constraint:amount_max'],
      ['another destination', { ...PAYOUT, destination: 'acct_attacker' }, 'constraint:destination'],
      ['an amount as a string', { ...PAYOUT, amount: '100' }, 'constraint:amount_max'],
      ['a missing currency', { destination: 'acct_1', amount: 1 }, 'constraint:currency'],
    ])('refuses a payout with %s', async (_name, body, rule) => {
      const { token } = await credential(payoutDetail());
      const response = await gateway('POST', '/connectors/payments/v1/payouts', token, body);
      expect(response.status).toBe(403);
      expect(response.body).toMatchObject({ error: 'insufficient_scope', rule });
    });

    it('refuses duplicate JSON keys, a body it cannot parse, and invalid UTF-8', async () => {
      const { token } = await credential(payoutDetail());
      const duplicate = await gateway(
        'POST',
        '/connectors/payments/v1/payouts',
        token,
        '{"destination":"acct_1","amount":1,"currency":"usd","amount":9999999}',
      );
      expect(duplicate.status).toBe(400);
      expect(duplicate.body).toEqual({ error: 'invalid_request', error_description: 'the body repeats the key "amount"' });
      const form = await gateway('POST', '/connectors/payments/v1/payouts', token, 'destination=acct_1&amount=1&currency=usd', {
        'content-type': 'application/x-www-form-urlencoded',
      });
      expect(form.status).toBe(415);
      const latin1 = await http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
      });
      expect(latin1.status).toBe(400);
      // None of these spent the one use.
      expect((await gateway('POST', '/connectors/payments/v1/payouts', token, PAYOUT)).status).toBe(201);
      before = seen(payments);
    });

    it.each([
      ['a dot-dot segment', '/connectors/payments/v1/payouts/../balance'],
      ['an encoded dot-dot', '/connectors/payments/v1/payouts/%2e%2e/balance'],
      ['a double-encoded dot-dot', '/connectors/payments/v1/payouts/%252e%252e/balance'],
      ['an encoded slash', '/connectors/payments/v1%2fbalance'],
      ['a backslash', '/connectors/payments/v1\\balance'],
      ['an empty segment', '/connectors/payments//v1/balance'],
      ['an access token in the query', '/connectors/payments/v1/balance?access_token=x'],
    ])('refuses a target with %s', async (_name, target) => {
      const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      const response = await rawRequest(services.gatewayUrl, 'GET', target, { authorization: `Bearer ${token}` });
      expect(response.status).toBe(400);
      expect(JSON.parse(response.text).error).toBe('invalid_request');
    });

    it('refuses an absolute-form target', async () => {
      const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      const url = new URL(services.gatewayUrl);
      const text = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(url.port), url.hostname, () => {
          // The gateway's own Host (`evil.example` there is refused first, 421: WRIT_ALLOWED_HOSTS).
          socket.write(
            `GET http://evil.example/connectors/payments/v1/balance HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
          );
        });
        let data = '';
        socket.on('data', (chunk: Buffer) => (data += chunk.toString()));
        socket.on('end', () => resolve(data));
        socket.on('error', reject);
      });
      expect(text).toMatch(/^HTTP\/1.1 400/);
    });

    it('refuses method-override headers', async () => {
      const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
      const response = await gateway('GET', '/connectors/payments/v1/balance', token, undefined, { 'x-http-method-override': 'DELETE' });
      expect(response.status).toBe(400);
    });

    it('refuses a body over the limit with 413', async () => {
      const { token } = await credential(payoutDetail());
      const response = await gateway('POST', '/connectors/payments/v1/payouts', token, { ...PAYOUT, memo: 'x'.repeat(5000) });
      expect(response.status).toBe(413);
    });
  });

  describe('upstream failures', () => {
    it('does not follow a redirect with the credential', async () => {
      const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['moved.get'] });
      const response = await rawRequest(services.gatewayUrl, 'GET', '/connectors/payments/v1/moved', { authorization: `Bearer ${token}` });
      expect(response.status).toBe(302);
      expect(response.headers.location).toBe(`${elsewhere.url}/steal`);
      expect(elsewhere.received).toHaveLength(0);
    });

    it('answers 504 when the upstream is too slow and 502 when it cannot be reached', async () => {
      const slow = await credential({ type: 'connector', connector: 'payments', actions: ['slow.get'] });
      const timeout = await gateway('GET', '/connectors/payments/v1/slow', slow.token);
      expect(timeout.status).toBe(504);
      expect(timeout.body.error).toBe('gateway_timeout');
      await services.runtime.pool.query(`UPDATE connectors SET base_url = 'http://127.0.0.1:9' WHERE id = 'payments'`);
      // The credential is bound to its destination: seal it again for the new one.
      await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: PAYMENTS_SECRET });
      try {
        const { token } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
        const down = await gateway('GET', '/connectors/payments/v1/balance', token);
        expect(down.status).toBe(502);
        expect(down.body.error).toBe('bad_gateway');
      } finally {
        await services.runtime.pool.query(`UPDATE connectors SET base_url = $1 WHERE id = 'payments'`, [payments.url]);
        await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: PAYMENTS_SECRET });
      }
    });

    it('answers 504 and audits upstream_timeout when the headers timeout ends a silent upstream before the deadline', async () => {
      // An upstream that accepts the request and never answers. The dispatcher's headers timeout
      // is WRIT_UPSTREAM_TIMEOUT_MS too and races the gateway's own deadline (undici's timers for
      // more than 1 s tick every half second and may fire up to a tick early): the deadline is
      // pushed back here so that the headers timeout always comes first.
      const held: ServerResponse[] = [];
      const silent = createServer((_request, response) => held.push(response));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
      const timeout = AbortSignal.timeout.bind(AbortSignal);
      const deadline = jest.spyOn(AbortSignal, 'timeout').mockImplementation((ms: number) => timeout(ms === 700 ? 20_000 : ms));
      const { pool, masterKey } = services.runtime;
      await pool.query(`UPDATE connectors SET base_url = $1 WHERE id = 'payments'`, [silentUrl]);
      await setConnectorCredential(pool, masterKey, 'payments', { type: 'bearer', token: PAYMENTS_SECRET });
      try {
        const { token, taskId } = await credential({ type: 'connector', connector: 'payments', actions: ['balance.get'] });
        const started = Date.now();
        const response = await gateway('GET', '/connectors/payments/v1/balance', token);
        expect([response.status, response.body.error]).toEqual([504, 'gateway_timeout']);
        // The request reached the upstream, and the headers timeout (not the pushed-back deadline) ended it.
        expect(held).toHaveLength(1);
        expect(deadline).toHaveBeenCalledWith(700);
        expect(Date.now() - started).toBeLessThan(10_000);
        const { rows } = await pool.query(`SELECT outcome, data FROM audit_events WHERE task_id = $1 AND type = 'gateway.upstream'`, [taskId]);
        expect(rows).toHaveLength(1);
        expect(rows[0].outcome).toBe('failure');
        expect(rows[0].data).toMatchObject({ status: 504, error: 'gateway_timeout', reason: 'upstream_timeout' });
      } finally {
        deadline.mockRestore();
        await pool.query(`UPDATE connectors SET base_url = $1 WHERE id = 'payments'`, [payments.url]);
        await setConnectorCredential(pool, masterKey, 'payments', { type: 'bearer', token: PAYMENTS_SECRET });
        silent.closeAllConnections();
        await new Promise((resolve) => silent.close(resolve));
      }
    });
  });

  describe('streaming the upstream response', () => {
    // WRIT_UPSTREAM_TIMEOUT_MS bounds the whole exchange, body included, and the suite's 700 ms
    // (for the 504 test) is less than a 4 MiB relay can take on a loaded machine (over 600 ms
    // measured): these tests stream through a second gateway over the same database, with a
    // deadline they do not race. The deadline's own cut is tested on the suite's gateway.
    let streaming: TestServices;
    let streamingUrl: string;
    beforeAll(async () => {
      streaming = await startSecondInstance(services, { gateway: createGatewayApp, env: { WRIT_UPSTREAM_TIMEOUT_MS: '20000' } });
      const gatewayApp = streaming.apps[streaming.apps.length - 1];
      streamingUrl = `http://127.0.0.1:${(gatewayApp.getHttpServer().address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await streaming.close();
    });
    /** The one `gateway.upstream` event of a task, once both gateways have written theirs. */
    async function upstreamEvent(taskId: string): Promise<{ outcome: string; data: Record<string, unknown> }> {
      await Promise.all([services.runtime.audit.drain(), streaming.runtime.audit.drain()]);
      const { rows } = await services.runtime.pool.query(`SELECT outcome, data FROM audit_events WHERE task_id = $1 AND type = 'gateway.upstream'`, [taskId]);
      expect(rows).toHaveLength(1);
      return rows[0];
    }

    it('relays a large body intact, with backpressure, and audits its size', async () => {
      const { token, taskId } = await credential({ type: 'connector', connector: 'exports', actions: ['export.get'] });
      const response = await fetch(`${streamingUrl}/connectors/exports/v1/export`, { headers: { authorization: `Bearer ${token}` } });
      expect(response.status).toBe(200);
      // Read slowly at first, so that the gateway's writes to the agent fill up and wait.
      const reader = response.body!.getReader();
      const chunks: Buffer[] = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (chunks.length < 3) await new Promise((resolve) => setTimeout(resolve, 30));
        chunks.push(Buffer.from(value));
      }
      const body = Buffer.concat(chunks);
      expect(body.length).toBe(EXPORT_CHUNKS * EXPORT_CHUNK);
      for (let index = 0; index < EXPORT_CHUNKS; index += 1) expect(body[index * EXPORT_CHUNK + EXPORT_CHUNK - 1]).toBe(index);
      const event = await upstreamEvent(taskId);
      expect(event.outcome).toBe('success');
      expect(event.data).toMatchObject({ status: 200, bytes: EXPORT_CHUNKS * EXPORT_CHUNK });
    });

    it('stops reading the upstream when the agent goes away mid-stream, and audits the cut', async () => {
      const { token, taskId } = await credential({ type: 'connector', connector: 'exports', actions: ['export.slow'] });
      const ends = exportEnds.length;
      await new Promise<void>((resolve, reject) => {
        const request = httpRequest(`${streamingUrl}/connectors/exports/v1/export/slow`, { headers: { authorization: `Bearer ${token}` } }, (response) => {
          expect(response.statusCode).toBe(200);
          response.once('data', () => {
            request.destroy();
            resolve();
          });
        });
        request.on('error', (error) => (request.destroyed ? undefined : reject(error)));
        request.end();
      });
      // The gateway closes its upstream request long before the upstream's 3 s of chunks.
      for (let waited = 0; exportEnds.length === ends && waited < 2_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(exportEnds.slice(ends)).toEqual(['closed']);
      const event = await upstreamEvent(taskId);
      expect(event.outcome).toBe('failure');
      expect(event.data).toMatchObject({ status: 200, error: 'ERR_STREAM_PREMATURE_CLOSE' });
    });

    it('cuts a body still streaming when the upstream deadline passes, and audits upstream_timeout', async () => {
      // The suite's gateway (700 ms) against 64 chunks 50 ms apart: the deadline always falls mid-body.
      const { token, taskId } = await credential({ type: 'connector', connector: 'exports', actions: ['export.slow'] });
      const ends = exportEnds.length;
      const response = await fetch(`${services.gatewayUrl}/connectors/exports/v1/export/slow`, { headers: { authorization: `Bearer ${token}` } });
      expect(response.status).toBe(200);
      // Headers sent, the gateway can only close the connection: the agent sees a short body.
      await expect(response.arrayBuffer()).rejects.toThrow('terminated');
      for (let waited = 0; exportEnds.length === ends && waited < 2_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(exportEnds.slice(ends)).toEqual(['closed']);
      const event = await upstreamEvent(taskId);
      expect(event.outcome).toBe('failure');
      // Not the deadline's TimeoutError code (23): a string the operator can read.
      expect(event.data).toMatchObject({ status: 200, error: 'upstream_timeout' });
      expect(event.data.bytes).toBeLessThan(EXPORT_CHUNKS * EXPORT_CHUNK);
    });
  });

  describe('audit', () => {
    it('records every call, allowed or refused, with the operation, the checked values (strings as HMACs), status and latency', async () => {
      const { token, taskId } = await credential(payoutDetail());
      await gateway('POST', '/connectors/payments/v1/payouts', token, PAYOUT);
      await gateway('POST', '/connectors/payments/v1/payouts', token, PAYOUT);
      await services.runtime.audit.drain();
      const { rows } = await services.runtime.pool.query(
        `SELECT type, outcome, data FROM audit_events WHERE task_id = $1 AND type LIKE 'gateway.%' ORDER BY seq`,
        [taskId],
      );
      expect(rows.map((row) => [row.type, row.outcome])).toEqual([
        ['gateway.call', 'success'],
        ['gateway.upstream', 'success'],
        ['gateway.call', 'denied'],
      ]);
      expect(rows[0].data).toMatchObject({ operation: 'payouts.create', method: 'POST', path: '/v1/payouts', uses: 1, max_uses: 1 });
      const destination = rows[0].data.constraints.find((entry: { name: string }) => entry.name === 'destination');
      expect(destination.actual).toBe(`hmac-sha256:${services.runtime.masterKey.auditHmac('acct_1')}`);
      expect(rows[0].data.constraints.find((entry: { name: string }) => entry.name === 'amount_max')).toMatchObject({
        actual: 42000,
        granted: 42000,
        ok: true,
      });
      expect(rows[1].data).toMatchObject({ status: 201 });
      expect(typeof rows[1].data.upstream_latency_ms).toBe('number');
      expect(rows[2].data).toMatchObject({ status: 401, error: 'invalid_token', reason: 'budget_spent' });
    });

    it('never lets an upstream secret into a response, a log line or an audit event', async () => {
      await services.runtime.audit.drain();
      const { rows } = await services.runtime.pool.query(`SELECT data::text AS data FROM audit_events`);
      const haystacks = [...responses, ...logLines, ...rows.map((row) => row.data)];
      expect(haystacks.length).toBeGreaterThan(50);
      expect(logLines.length).toBeGreaterThan(10);
      for (const secret of [PAYMENTS_SECRET, CODE_SECRET, CHAT_SECRET, 'chat_at_']) {
        expect(haystacks.filter((text) => text.includes(secret))).toEqual([]);
      }
    });
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
