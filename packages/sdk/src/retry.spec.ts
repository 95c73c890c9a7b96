import { inspect } from 'node:util';
import { exportJWK, generateKeyPair } from 'jose';
import { Agent } from './agent.js';
import { AccessDeniedError, InvalidClientError, WritOAuthError, WritResponseError } from './errors.js';
import { Orchestrator } from './orchestrator.js';
import { retryDelayMs } from './retry.js';

const ISSUER = 'https://writ.example';
const GATEWAY = 'https://gw.example';

interface Answer {
  status: number;
  body?: Record<string, unknown>;
  headers?: Record<string, string>;
}

/** A Writ (token endpoint, Tasks API, gateway) answering from a script and recording what it was sent. */
function scripted(answers: Answer[], discoveryHeaders: Record<string, string> = {}) {
  const seen: Array<{ url: URL; method: string; headers: Headers; form: URLSearchParams; redirect?: string }> = [];
  const fetchImpl = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = input instanceof Request ? input : undefined;
    const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
    if (url.pathname === '/.well-known/oauth-authorization-server') {
      return Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }, { headers: discoveryHeaders });
    }
    const headers = new Headers(request?.headers ?? init?.headers);
    const body = typeof init?.body === 'string' ? init.body : init?.body instanceof URLSearchParams ? init.body.toString() : '';
    seen.push({ url, method: request?.method ?? init?.method ?? 'GET', headers, form: new URLSearchParams(body), redirect: init?.redirect });
    const answer = answers.shift();
    if (!answer) throw new Error(`unscripted request to ${url.href}`);
    return new Response(answer.body ? JSON.stringify(answer.body) : null, {
      status: answer.status,
      headers: { 'content-type': 'application/json', ...answer.headers },
    });
  };
  return { fetch: fetchImpl, seen };
}

async function privateJwk() {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: 'k1' };
}

async function agentWith(server: ReturnType<typeof scripted>, dpop = false): Promise<Agent> {
  return new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: server.fetch, dpop });
}

const issued = (token = 'at-secret', type = 'Bearer'): Answer => ({ status: 200, body: { access_token: token, token_type: type, expires_in: 120 } });
const READ = { connector: 'payments', action: 'payouts.get' };

/** Runs `work` under fake timers, advancing the clock until it settles; returns what it resolved or threw. */
async function settle<T>(work: () => Promise<T>): Promise<{ value?: T; error?: unknown; waits: number[] }> {
  jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
  const timers = jest.spyOn(globalThis, 'setTimeout');
  let done = false;
  const outcome: { value?: T; error?: unknown } = {};
  const running = work().then(
    (value) => (outcome.value = value),
    (error: unknown) => (outcome.error = error),
  );
  void running.finally(() => (done = true));
  while (!done) await jest.advanceTimersByTimeAsync(250);
  const waits = timers.mock.calls.map(([, ms]) => ms).filter((ms): ms is number => typeof ms === 'number' && ms >= 250);
  timers.mockRestore();
  return { ...outcome, waits };
}

afterEach(() => jest.useRealTimers());

describe('retryDelayMs', () => {
  const answer = (status: number, headers: Record<string, string> = {}) => new Response(null, { status, headers });

  it('waits at least Retry-After, with bounded jitter, and only for 429/503', () => {
    expect(retryDelayMs(answer(503, { 'retry-after': '2' }), 0, () => 0)).toBe(2000);
    expect(retryDelayMs(answer(503, { 'retry-after': '2' }), 0, () => 0.999)).toBeLessThanOrEqual(2400);
    expect(retryDelayMs(answer(429, { 'retry-after': '1' }), 2, () => 0)).toBe(1000);
    for (const status of [400, 401, 403, 404, 500, 502]) expect(retryDelayMs(answer(status, { 'retry-after': '1' }), 0)).toBeUndefined();
    expect(retryDelayMs(answer(503, { 'retry-after': '1' }), 3)).toBeUndefined(); // at most three retries
    expect(retryDelayMs(answer(503, { 'retry-after': '3600' }), 0)).toBeUndefined(); // too long: the caller decides
  });

  it("reads an HTTP-date Retry-After against the server's Date, not the local clock", () => {
    const serverNow = Date.now() + 3_600_000; // the local clock is an hour behind
    const headers = { date: new Date(serverNow).toUTCString(), 'retry-after': new Date(serverNow + 5000).toUTCString() };
    expect(retryDelayMs(answer(503, headers), 0, () => 0)).toBe(5000);
  });
});

describe('token endpoint retries', () => {
  it('retries a 503 after its Retry-After, with a fresh client assertion', async () => {
    const server = scripted([{ status: 503, body: { error: 'temporarily_unavailable' }, headers: { 'retry-after': '2' } }, issued()]);
    const agent = await agentWith(server);
    const { value, waits } = await settle(() => agent.credential('task-token', READ));
    expect(value?.accessToken).toBe('at-secret');
    expect(server.seen).toHaveLength(2);
    expect(waits.some((ms) => ms >= 2000 && ms <= 2400)).toBe(true);
    expect(new Set(server.seen.map((request) => request.form.get('client_assertion'))).size).toBe(2);
  });

  it('gives up after three retries and surfaces the last answer', async () => {
    const busy: Answer = { status: 429, body: { error: 'slow_down_please' }, headers: { 'retry-after': '1' } };
    const server = scripted([busy, busy, busy, busy, issued()]);
    const agent = await agentWith(server);
    const { error } = await settle(() => agent.credential('task-token', READ));
    expect(error).toMatchObject({ status: 429 });
    expect(server.seen).toHaveLength(4);
  });

  it.each([
    [400, 'access_denied', AccessDeniedError],
    [401, 'invalid_client', InvalidClientError],
    [403, 'insufficient_scope', WritOAuthError],
  ])('never retries a %i', async (status, code, type) => {
    const server = scripted([{ status, body: { error: code }, headers: { 'retry-after': '1' } }, issued()]);
    const agent = await agentWith(server);
    const { error } = await settle(() => agent.credential('task-token', READ));
    expect(error).toBeInstanceOf(type);
    expect(server.seen).toHaveLength(1);
  });

  it('sends the DPoP nonce the server asks for, once (RFC 9449 §8)', async () => {
    const server = scripted([
      { status: 400, body: { error: 'use_dpop_nonce', error_description: 'a DPoP nonce is required' }, headers: { 'dpop-nonce': 'n-1' } },
      issued('at-secret', 'DPoP'),
    ]);
    const agent = await agentWith(server, true);
    const credential = await agent.credential('task-token', READ);
    expect(credential.tokenType).toBe('DPoP');
    const proofs = server.seen.map(
      (request) => JSON.parse(Buffer.from(request.headers.get('dpop')!.split('.')[1], 'base64url').toString()) as { nonce?: string },
    );
    expect(proofs.map((proof) => proof.nonce)).toEqual([undefined, 'n-1']);
  });
});

describe('gateway call retries', () => {
  it('retries an idempotent call on 503, never a POST', async () => {
    const unavailable: Answer = { status: 503, body: { error: 'unavailable' }, headers: { 'retry-after': '1' } };
    const server = scripted([issued(), unavailable, { status: 200, body: { ok: true } }, unavailable]);
    const agent = await agentWith(server);
    const read = await settle(() => agent.fetch('task-token', READ, '/v1/payouts/po_1'));
    expect(read.value?.status).toBe(200);
    const write = await settle(() => agent.fetch('task-token', READ, '/v1/payouts', { json: { amount: 1 } }));
    expect(write.value?.status).toBe(503);
    expect(server.seen.map((request) => request.method)).toEqual(['POST', 'GET', 'GET', 'POST']);
  });

  it("answers the gateway's use_dpop_nonce with the nonce, without a new exchange", async () => {
    const server = scripted([
      issued('at-secret', 'DPoP'),
      { status: 401, headers: { 'www-authenticate': 'DPoP error="use_dpop_nonce", algs="ES256"', 'dpop-nonce': 'gw-n' } },
      { status: 200, body: { ok: true } },
    ]);
    const agent = await agentWith(server, true);
    const response = await agent.fetch('task-token', READ, '/v1/payouts/po_1');
    expect(response.status).toBe(200);
    const gatewayCalls = server.seen.filter((request) => request.url.origin === GATEWAY);
    expect(gatewayCalls).toHaveLength(2);
    expect(server.seen.filter((request) => request.url.pathname === '/oauth2/token')).toHaveLength(1);
    const nonce = JSON.parse(Buffer.from(gatewayCalls[1].headers.get('dpop')!.split('.')[1], 'base64url').toString()) as { nonce?: string };
    expect(nonce.nonce).toBe('gw-n');
  });
});

describe('gateway 401s', () => {
  const refusedToken: Answer = { status: 401, body: { error: 'invalid_token' }, headers: { 'www-authenticate': 'Bearer realm="writ", error="invalid_token"' } };
  // The gateway passes an upstream's 401 on without its WWW-Authenticate: the upstream got that request.
  const upstream401: Answer = { status: 401, body: { error: 'bad upstream credential' } };
  const WRITE = { connector: 'payments', action: 'payouts.create' };

  it("returns an upstream's 401 as the answer: a write is never sent twice", async () => {
    const server = scripted([issued('at-1'), upstream401, issued('at-2')]);
    const agent = await agentWith(server);
    const response = await agent.fetch('task-token', WRITE, '/v1/payouts', { json: { amount: 1 } });
    expect(response.status).toBe(401);
    expect(server.seen.map((request) => request.url.origin)).toEqual([ISSUER, GATEWAY]);
  });

  it("sends the call once more with a new credential after the gateway's own invalid_token", async () => {
    const server = scripted([issued('at-1'), refusedToken, issued('at-2'), { status: 201, body: { id: 'po_1' } }]);
    const agent = await agentWith(server);
    const response = await agent.fetch('task-token', WRITE, '/v1/payouts', { json: { amount: 1 } });
    expect(response.status).toBe(201);
    expect(server.seen.map((request) => request.headers.get('authorization'))).toEqual([null, 'Bearer at-1', null, 'Bearer at-2']);
  });
});

describe('secrets in logs', () => {
  it('keeps access and task tokens out of JSON and console.log', async () => {
    const server = scripted([
      issued('at-secret-value'),
      issued('tasks-at'),
      { status: 201, body: { task_id: 't1', task_token: 'task-secret-value', expires_at: 'x', status: 'active' } },
    ]);
    const agent = await agentWith(server);
    const credential = await agent.credential('task-secret-value', READ);
    expect(credential.accessToken).toBe('at-secret-value');
    const orchestrator = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: server.fetch });
    const task = await orchestrator.tasks.create({ agentId: 'a', purpose: 'p', allowed: [], ttlSeconds: 60 });
    expect(task.taskToken).toBe('task-secret-value');
    for (const shown of [
      JSON.stringify(credential),
      inspect(credential),
      JSON.stringify(task),
      inspect(task),
      inspect(agent.forTask('task-secret-value')),
      JSON.stringify(agent.forTask('task-secret-value')),
    ]) {
      expect(shown).not.toContain('secret-value');
      expect(shown).toContain('[redacted]');
    }
  });
});

describe('malformed token responses', () => {
  it.each([
    { access_token: 'at-secret-value', token_type: 'N_A', expires_in: 60 },
    { access_token: 'at-secret-value', token_type: 'Bearer', expires_in: 'soon' },
    { access_token: 'at-secret-value', expires_in: 60 },
  ])('never carry the token in the error (%j)', async (body) => {
    const server = scripted([{ status: 200, body }]);
    const agent = await agentWith(server);
    const error = await agent.credential('task-token', READ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WritResponseError);
    expect(inspect(error, { depth: 10 })).not.toContain('at-secret-value');
  });
});

describe('Orchestrator', () => {
  it('retries a shed Tasks API call and never follows a redirect with its token', async () => {
    const server = scripted([
      issued('tasks-at'),
      { status: 503, body: { error: 'temporarily_unavailable' }, headers: { 'retry-after': '1' } },
      { status: 200, body: { task_id: 't1', status: 'completed' } },
    ]);
    const orchestrator = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: server.fetch });
    const { value } = await settle(() => orchestrator.tasks.complete('t1'));
    expect(value).toEqual({ task_id: 't1', status: 'completed' });
    const calls = server.seen.filter((request) => request.url.pathname === '/v1/tasks/t1/complete');
    expect(calls).toHaveLength(2);
    expect(calls.every((request) => request.redirect === 'manual')).toBe(true);
  });
});

describe('Tasks API types', () => {
  it('type a task as the Tasks API shows it: limits, grants, budgets', async () => {
    const task = {
      task_id: 't1',
      allowed: [{ type: 'connector', connector: 'payments', actions: ['payouts.get'], limits: { calls: 3 } }],
      grants: [
        {
          jti: 'j1',
          connector: 'payments',
          action: 'payouts.get',
          authorization_details: [],
          issued_at: '',
          expires_at: '',
          max_uses: null,
          uses: 1,
          state: 'spent',
          revoked_reason: null,
        },
      ],
      budgets: [{ entry: 0, calls: { limit: 3, used: 1, remaining: 2 } }],
    };
    const server = scripted([issued('tasks-at'), { status: 200, body: task }]);
    const orchestrator = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: server.fetch });
    const info = await orchestrator.tasks.get('t1');
    // Typed members (`tsc --noEmit` checks these): no casts from `unknown`.
    const calls: number | undefined = info.allowed[0].limits?.calls;
    const uses: number | undefined = info.grants?.[0].uses;
    const remaining: number | undefined = info.budgets?.[0].calls?.remaining;
    expect([calls, uses, remaining]).toEqual([3, 1, 2]);
  });
});

describe('Tasks API refusals', () => {
  it('name the offending fields of a refused task (`fields: [{field, message}]`)', async () => {
    const fields = [{ field: 'ttl_seconds', message: 'ttl_seconds must not be less than 1' }];
    const server = scripted([issued('tasks-at'), { status: 400, body: { error: 'invalid_request', message: 'the request body is invalid', fields } }]);
    const orchestrator = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: server.fetch });
    const refused = await orchestrator.tasks.create({ agentId: 'agent-1', purpose: 'pay', allowed: [], ttlSeconds: -5 }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(WritOAuthError);
    expect((refused as WritOAuthError).fields).toEqual(fields);
    expect((refused as WritOAuthError).message).toContain('ttl_seconds must not be less than 1');
  });
});

describe('Tasks API paths', () => {
  it('sends a task id as one segment, and refuses dot segments', async () => {
    const server = scripted([issued('tasks-at'), { status: 200, body: { task_id: 'x' } }]);
    const orchestrator = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: server.fetch });
    await orchestrator.tasks.get('../../oauth2/revoke?token=x');
    expect(server.seen[1].url.pathname).toBe('/v1/tasks/..%2F..%2Foauth2%2Frevoke%3Ftoken%3Dx');
    for (const id of ['..', '.', '']) await expect(orchestrator.tasks.complete(id)).rejects.toMatchObject({ code: 'invalid_request' });
    expect(server.seen).toHaveLength(2);
  });
});

describe('credential cache', () => {
  it('shares one exchange between concurrent identical requests, and never between different constraints', async () => {
    const server = scripted([issued('a'), issued('b'), issued('c')]);
    const agent = await agentWith(server);
    const narrow = { connector: 'payments', action: 'payouts.create', constraints: { amount_max: 10, destination: 'acct_1' } };
    const wide = { connector: 'payments', action: 'payouts.create', constraints: { amount_max: 1000, destination: 'acct_1' } };
    const same = { connector: 'payments', action: 'payouts.create', constraints: { destination: 'acct_1', amount_max: 10 } };
    const got = await Promise.all([agent.credential('t', narrow), agent.credential('t', same), agent.credential('t', wide), agent.credential('t', narrow)]);
    expect(server.seen).toHaveLength(2);
    // Which of the two exchanges the server answers first is not fixed: compare, do not name.
    const [first, second, wider, again] = got.map((credential) => credential.accessToken);
    expect([second, again]).toEqual([first, first]);
    expect(wider).not.toBe(first);
    expect(await agent.credential('other-task', narrow)).toMatchObject({ accessToken: 'c' });
  });
});

describe('clock skew', () => {
  it("signs assertions and DPoP proofs on the server's clock when ours is off", async () => {
    const serverNow = Math.floor(Date.now() / 1000) + 3600; // our clock is an hour late
    const server = scripted([issued('at', 'DPoP'), { status: 200, body: { ok: true } }], { date: new Date(serverNow * 1000).toUTCString() });
    const agent = await agentWith(server, true);
    await agent.fetch('task-token', READ, '/v1/payouts/po_1');
    const [exchange, call] = server.seen;
    const payload = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()) as { iat: number; exp?: number };
    const assertion = payload(exchange.form.get('client_assertion')!);
    expect(Math.abs(assertion.iat - serverNow)).toBeLessThan(60);
    expect(Math.abs(assertion.exp! - serverNow)).toBeLessThan(120);
    expect(Math.abs(payload(exchange.headers.get('dpop')!).iat - serverNow)).toBeLessThan(60);
    expect(Math.abs(payload(call.headers.get('dpop')!).iat - serverNow)).toBeLessThan(60);
  });
});

describe('a shared exchange and its callers’ signals', () => {
  const pending: Answer = { status: 400, body: { error: 'authorization_pending', approval_id: 'ap-1', interval: 1 } };

  it('one caller aborting does not fail the others waiting for the same credential', async () => {
    const server = scripted([pending, issued('shared')]);
    const agent = await agentWith(server);
    const first = new AbortController();
    const { value } = await settle(async () => {
      const waits = [agent.credential('t', READ, { signal: first.signal }), agent.credential('t', READ)];
      first.abort(new Error('the first caller gave up'));
      return Promise.allSettled(waits);
    });
    expect(value?.[0]).toMatchObject({ status: 'rejected', reason: { message: 'the first caller gave up' } });
    expect(value?.[1]).toMatchObject({ status: 'fulfilled', value: { accessToken: 'shared' } });
  });

  it('stops polling when the last caller waiting has aborted', async () => {
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask'] });
    const server = scripted([pending, pending, pending, issued()]);
    const agent = await agentWith(server);
    const only = new AbortController();
    const waiting = agent.credential('t', READ, { signal: only.signal }).catch((error: unknown) => error);
    while (server.seen.length === 0) await jest.advanceTimersByTimeAsync(10);
    only.abort(new Error('gave up'));
    expect(await waiting).toMatchObject({ message: 'gave up' });
    await jest.advanceTimersByTimeAsync(10_000);
    expect(server.seen).toHaveLength(1);
  });
});
