import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import { Agent } from './agent.js';
import { Orchestrator } from './orchestrator.js';
import { GatewayPathError, WritTimeoutError } from './errors.js';
import { MAX_LIFETIME_SECONDS } from './lifetime.js';

/**
 * What an adopter coming from oauth4webapi or an Auth0 SDK expects of the agent: an MCP
 * transport's URL honoured but never off the gateway, no gateway call hanging for ever, and token
 * lifetimes (`expires_in`) that cannot make it exchange on every attempt or cache for ever.
 */
const ISSUER = 'https://writ.example';
const GATEWAY = 'https://gw.example';
const READ = { connector: 'payments', action: 'payouts.get' };

interface Answer {
  status: number;
  body?: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** Writ answering from a script (token endpoint and gateway), recording each request; `passThrough` origins go to the network. */
function scripted(answers: Answer[], passThrough: string[] = []) {
  const seen: Array<{ url: URL; method: string; headers: Headers; body: string }> = [];
  const fetchImpl = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
    if (passThrough.includes(url.origin)) return fetch(input, init);
    if (url.pathname === '/.well-known/oauth-authorization-server') {
      return Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` });
    }
    const body = typeof init?.body === 'string' ? init.body : init?.body instanceof URLSearchParams ? init.body.toString() : '';
    seen.push({ url, method: init?.method ?? 'GET', headers: new Headers(init?.headers), body });
    const answer = answers.shift();
    if (!answer) throw new Error(`unscripted request to ${url.href}`);
    return new Response(answer.body ? JSON.stringify(answer.body) : null, {
      status: answer.status,
      headers: { 'content-type': 'application/json', ...answer.headers },
    });
  };
  const exchanges = () => seen.filter((request) => request.url.pathname === '/oauth2/token').length;
  return { fetch: fetchImpl, seen, exchanges };
}

async function agentWith(server: ReturnType<typeof scripted>, options: { dpop?: boolean; gatewayUrl?: string; timeoutMs?: number } = {}): Promise<Agent> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return new Agent({
    issuer: ISSUER,
    gatewayUrl: options.gatewayUrl ?? GATEWAY,
    clientId: 'agent-1',
    key: { ...(await exportJWK(privateKey)), kid: 'k1' },
    fetch: server.fetch,
    dpop: options.dpop ?? false,
    allowInsecureRequests: options.gatewayUrl?.startsWith('http:') ?? false,
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
}

const issued = (token: string, expiresIn: unknown = 120, type = 'Bearer'): Answer => ({
  status: 200,
  body: { access_token: token, token_type: type, expires_in: expiresIn },
});

/** Runs `work` under fake timers, advancing the clock until it settles. */
async function settle<T>(work: () => Promise<T>): Promise<{ value?: T; error?: unknown }> {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
  let done = false;
  const outcome: { value?: T; error?: unknown } = {};
  void work()
    .then(
      (value) => (outcome.value = value),
      (error: unknown) => (outcome.error = error),
    )
    .finally(() => (done = true));
  while (!done) await jest.advanceTimersByTimeAsync(250);
  return outcome;
}

afterEach(() => jest.useRealTimers());

describe('mcpFetch: the URL the MCP transport passes', () => {
  const session = { connector: 'tools', session: { action: 'lookup' } };
  const initialize = { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }) };

  it.each([
    ['another host', 'https://attacker.example/connectors/tools'],
    ['another scheme', 'http://gw.example/connectors/tools'],
    ['another port', 'https://gw.example:8443/connectors/tools'],
    ['credentials in the URL', 'https://user:pw@gw.example/connectors/tools'],
    ['another connector on the gateway', 'https://gw.example/connectors/payments'],
    ['a path that climbs out of the connector', 'https://gw.example/connectors/tools/%2e%2e/payments'],
    ['a gateway path outside the connectors', 'https://gw.example/metrics'],
    ['a path under the endpoint', 'https://gw.example/connectors/tools/v1/other'],
  ])('refuses %s before any credential exists, naming the URL', async (_case, target) => {
    const server = scripted([issued('at-secret')]);
    const agent = await agentWith(server);
    const mcpFetch = agent.mcpFetch('task-token', session);
    const refused = await mcpFetch(target, initialize).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(GatewayPathError);
    const shown = new URL(target);
    expect((refused as Error).message).toContain(`${shown.host}${shown.pathname}`);
    expect((refused as Error).message).not.toContain('pw@');
    expect(server.seen).toHaveLength(0); // no exchange, nothing sent with a credential
  });

  it('honours the URL it is given on the MCP endpoint, its query included (a string, a URL or a Request), with its method and body', async () => {
    const ok: Answer = { status: 200, body: { jsonrpc: '2.0', id: 1, result: {} } };
    const server = scripted([issued('at-1'), ok, ok, ok]);
    const agent = await agentWith(server);
    const mcpFetch = agent.mcpFetch('task-token', session);
    await mcpFetch(`${agent.mcpUrl('tools')}?tenant=t1`, initialize);
    await mcpFetch(new URL(`${agent.mcpUrl('tools')}?x=1`), initialize);
    await mcpFetch(new Request(agent.mcpUrl('tools'), { method: 'POST', body: initialize.body }));
    const gatewayCalls = server.seen.filter((request) => request.url.origin === GATEWAY);
    expect(gatewayCalls.map((request) => request.url.href)).toEqual([
      'https://gw.example/connectors/tools?tenant=t1',
      'https://gw.example/connectors/tools?x=1',
      'https://gw.example/connectors/tools',
    ]);
    expect(gatewayCalls.map((request) => request.method)).toEqual(['POST', 'POST', 'POST']);
    expect(gatewayCalls[2].body).toBe(initialize.body);
    expect(gatewayCalls.every((request) => request.headers.get('authorization') === 'Bearer at-1')).toBe(true);
  });
});

describe('gateway call timeouts', () => {
  let hung: Server;
  let hungUrl: string;
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    // A real server that accepts every request and never answers: a hung gateway or upstream.
    hung = createServer(() => undefined);
    hung.on('connection', (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    hungUrl = `http://127.0.0.1:${(hung.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => hung.close(resolve));
  });

  it('fails a call the gateway never answers after the agent timeoutMs, with a typed error', async () => {
    const server = scripted([issued('at-1')], [hungUrl]);
    const agent = await agentWith(server, { gatewayUrl: hungUrl, timeoutMs: 300 });
    const started = Date.now();
    const error = await agent.fetch('task-token', READ, '/v1/payouts/po_1').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WritTimeoutError);
    expect(error).toMatchObject({ code: 'timeout', timeoutMs: 300 });
    expect((error as Error).message).toContain('/connectors/payments/v1/payouts/po_1');
    expect((error as Error).message).not.toContain('at-1');
    expect(Date.now() - started).toBeLessThan(3000);
  }, 10_000);

  it('times out by default (30 s) when no timeout is configured', async () => {
    const server = scripted([issued('at-1')], [hungUrl]);
    const agent = await agentWith(server, { gatewayUrl: hungUrl });
    await agent.credential('task-token', READ); // cached: only the gateway call runs under the fake clock
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    const pending = agent.fetch('task-token', READ, '/v1/payouts/po_1').catch((caught: unknown) => caught);
    let outcome: unknown;
    void pending.then((value) => (outcome = value));
    for (let waited = 0; outcome === undefined && waited < 40_000; waited += 500) {
      await jest.advanceTimersByTimeAsync(500);
      await new Promise((resolve) => setImmediate(resolve)); // the real socket's side of the abort
    }
    expect(outcome).toBeInstanceOf(WritTimeoutError);
    expect(outcome).toMatchObject({ timeoutMs: 30_000 });
  }, 10_000);

  it("takes a per-call timeoutMs, and the caller's signal still ends the call first with its own reason", async () => {
    const server = scripted([issued('at-1')], [hungUrl]);
    const agent = await agentWith(server, { gatewayUrl: hungUrl, timeoutMs: 60_000 });
    const perCall = await agent.fetch('task-token', READ, '/v1/payouts/po_1', { timeoutMs: 200 }).catch((caught: unknown) => caught);
    expect(perCall).toMatchObject({ code: 'timeout', timeoutMs: 200 });

    const controller = new AbortController();
    const reason = new Error('the user cancelled');
    setTimeout(() => controller.abort(reason), 100);
    const aborted = await agent
      .fetch('task-token', READ, '/v1/payouts/po_1', { signal: controller.signal, timeoutMs: 5000 })
      .catch((caught: unknown) => caught);
    expect(aborted).toBe(reason);
    await expect(agent.fetch('task-token', READ, '/v1/payouts/po_1', { timeoutMs: 0 })).rejects.toMatchObject({ code: 'invalid_options' });
  }, 10_000);

  it('times out an MCP request the gateway never answers (mcpFetch timeoutMs)', async () => {
    const server = scripted([issued('at-1')], [hungUrl]);
    const agent = await agentWith(server, { gatewayUrl: hungUrl });
    const mcpFetch = agent.mcpFetch('task-token', { connector: 'tools', session: { action: 'lookup' }, timeoutMs: 200 });
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} });
    await expect(mcpFetch(agent.mcpUrl('tools'), { method: 'POST', body })).rejects.toBeInstanceOf(WritTimeoutError);
  }, 10_000);
});

describe('token lifetimes (expires_in)', () => {
  const unavailable: Answer = { status: 503, body: { error: 'temporarily_unavailable' }, headers: { 'retry-after': '1' } };
  const ok: Answer = { status: 200, body: { ok: true } };

  it('uses an expires_in: 0 credential for the call that asked for it, once: a 503 retry does not exchange again', async () => {
    const server = scripted([issued('at-1', 0), unavailable, unavailable, ok, issued('at-2', 0), ok]);
    const agent = await agentWith(server);
    const first = await settle(() => agent.fetch('task-token', READ, '/v1/payouts/po_1'));
    expect(first.value?.status).toBe(200);
    expect(server.exchanges()).toBe(1);
    // Not cached: the next call gets its own.
    const second = await settle(() => agent.fetch('task-token', READ, '/v1/payouts/po_1'));
    expect(second.value?.status).toBe(200);
    expect(server.exchanges()).toBe(2);
    expect(server.seen.filter((request) => request.url.origin === GATEWAY).map((request) => request.headers.get('authorization'))).toEqual([
      'Bearer at-1',
      'Bearer at-1',
      'Bearer at-1',
      'Bearer at-2',
    ]);
  });

  it("keeps the credential across the gateway's DPoP nonce request: no second exchange", async () => {
    const server = scripted([
      issued('at-1', 0, 'DPoP'),
      { status: 401, headers: { 'www-authenticate': 'DPoP error="use_dpop_nonce", algs="ES256"', 'dpop-nonce': 'gw-n' } },
      ok,
    ]);
    const agent = await agentWith(server, { dpop: true });
    const response = await agent.fetch('task-token', READ, '/v1/payouts/po_1');
    expect(response.status).toBe(200);
    expect(server.exchanges()).toBe(1);
  });

  it('refreshes at most once per call when the gateway refuses a zero-lifetime credential, then answers', async () => {
    const refused: Answer = { status: 401, body: { error: 'invalid_token' }, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } };
    const server = scripted([issued('at-1', 0), refused, issued('at-2', 0), refused]);
    const agent = await agentWith(server);
    const response = await agent.fetch('task-token', READ, '/v1/payouts/po_1');
    expect(response.status).toBe(401);
    expect(server.exchanges()).toBe(2);
    expect(server.seen).toHaveLength(4);
  });

  it('shares one exchange between concurrent callers even when the credential is not cacheable', async () => {
    const server = scripted([issued('at-1', 0)]);
    const agent = await agentWith(server);
    const credentials = await Promise.all([agent.credential('task-token', READ), agent.credential('task-token', READ), agent.credential('task-token', READ)]);
    expect(new Set(credentials.map((credential) => credential.accessToken))).toEqual(new Set(['at-1']));
    expect(server.exchanges()).toBe(1);
  });

  it('clamps an absurd expires_in to a day', async () => {
    const server = scripted([issued('at-1', 1e300), issued('at-2', '1e30')]);
    const agent = await agentWith(server);
    const before = Date.now();
    for (const action of ['payouts.get', 'payouts.list']) {
      const credential = await agent.credential('task-token', { connector: 'payments', action });
      expect(credential.expiresAt).toBeLessThanOrEqual(Date.now() + MAX_LIFETIME_SECONDS * 1000);
      expect(credential.expiresAt).toBeGreaterThan(before + (MAX_LIFETIME_SECONDS - 60) * 1000);
    }
  });

  it.each([-1, 'soon', null])('refuses an invalid expires_in (%p) without the token in the error', async (expiresIn) => {
    const server = scripted([{ status: 200, body: { access_token: 'at-secret-value', token_type: 'Bearer', expires_in: expiresIn } }]);
    const agent = await agentWith(server);
    const error = await agent.credential('task-token', READ).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'unexpected_response' });
    expect(String((error as Error).message)).not.toContain('at-secret-value');
  });
});

describe('authorization server timeouts', () => {
  /** A Writ whose discovery answers (or not) and whose token endpoint and Tasks API never answer: each request ends only when its signal aborts. */
  const hanging =
    (discovery = true) =>
    (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      if (discovery && url.pathname === '/.well-known/oauth-authorization-server') {
        return Promise.resolve(Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }));
      }
      return new Promise((_, reject) => init?.signal?.addEventListener('abort', () => reject(init.signal?.reason as Error), { once: true }));
    };
  const key = async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    return { ...(await exportJWK(privateKey)), kid: 'k1' };
  };

  it('is a WritTimeoutError at discovery, the token endpoint and the Tasks API, as at the gateway', async () => {
    const options = async (discovery: boolean) => ({ issuer: ISSUER, clientId: 'c1', key: await key(), fetch: hanging(discovery), timeoutMs: 100 });
    const agent = new Agent({ ...(await options(true)), gatewayUrl: GATEWAY, dpop: false });
    await expect(agent.credential('task-token', READ)).rejects.toMatchObject({ name: 'WritTimeoutError', code: 'timeout', timeoutMs: 100 });
    const undiscovered = new Agent({ ...(await options(false)), gatewayUrl: GATEWAY, dpop: false });
    const error = await undiscovered.credential('task-token', READ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WritTimeoutError);
    expect((error as Error).message).toContain('discovery');
    const orchestrator = new Orchestrator(await options(true));
    await expect(orchestrator.tasks.get('t1')).rejects.toBeInstanceOf(WritTimeoutError);
  });

  it("leaves the caller's own abort as it is", async () => {
    const agent = new Agent({ issuer: ISSUER, clientId: 'c1', key: await key(), fetch: hanging(), gatewayUrl: GATEWAY, dpop: false });
    const reason = new DOMException('the caller gave up', 'TimeoutError');
    const controller = new AbortController();
    setTimeout(() => controller.abort(reason), 50);
    await expect(agent.credential('task-token', READ, { signal: controller.signal })).rejects.toBe(reason);
  });
});
