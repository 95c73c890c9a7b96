import { randomBytes } from 'node:crypto';
import { Agent as HttpAgent, METHODS, request as httpRequest, type ServerResponse } from 'node:http';
import type { InMemorySpanExporter, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { SignJWT } from 'jose';
import { clientAuthFields, PAYOUTS_CREATE } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { startConnecting } from './support/connect-flow';
import { dpopKey, proof } from './support/dpop';
import { eventually } from './support/eventually';
import {
  createTask,
  credentialForUser,
  exchangeFields,
  PAYOUT_REQUEST,
  registerConnector,
  requireApprovalAbove,
  seedClients,
  startIdentityProvider,
  World,
} from './support/grant-flow';
import { scrape } from './support/metrics';
import { MockUpstream, ReceivedRequest, startMockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, sendJson, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

jest.setTimeout(120_000);

const PAYMENTS_SECRET = `sk_live_hygiene_${randomBytes(12).toString('hex')}`;
const CHAT_SECRET = `chat_client_secret_${randomBytes(12).toString('hex')}`;
const PROVIDER_SECRET = `provider_client_secret_${randomBytes(12).toString('hex')}`;
const WEBHOOK_SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const WEBHOOK_PATH_SECRET = `hook_${randomBytes(12).toString('hex')}`;
const MASTER_KEY = randomBytes(32).toString('base64');
const IDP = 'https://idp.example';

function json(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

/** Names of form fields, JSON members and headers whose values are secrets, wherever the suite sees them. */
const SECRET_FIELDS = new Set([
  'client_assertion',
  'subject_token',
  'actor_token',
  'token',
  'access_token',
  'refresh_token',
  'task_token',
  'code',
  'code_verifier',
  'client_secret',
  'user_token',
  'id_token',
  'value',
]);

/**
 * Every secret of every main flow (task tokens, client assertions, DPoP proofs, access tokens,
 * connector credentials, the connected account's code, PKCE verifier, access and refresh tokens,
 * admin tokens, the master key, the database password, the webhook secret) is searched for, as
 * it is and base64, base64url or URL-encoded, in every log line at `trace`, every span of an
 * in-memory exporter, the `/metrics` text of every service, every audit event, and every answer
 * but the one that issued it.
 */
describe('secret hygiene: logs, spans, metrics, audit events and answers', () => {
  let services: TestServices;
  let world: World;
  let payments: MockUpstream;
  let chat: MockUpstream;
  let provider: MockUpstream;
  let hooks: MockUpstream;
  let idp: Awaited<ReturnType<typeof startIdentityProvider>>;
  let exporter: InMemorySpanExporter;
  let tracerProvider: NodeTracerProvider;
  const logs: string[] = [];
  /** Each secret seen, with the answer (index in `answers`) that issued it, if one did. */
  const secrets = new Map<string, number | undefined>();
  const answers: string[] = [];
  const realFetch = globalThis.fetch;
  const issuedTokens: string[] = [];
  /** When true, the provider's token endpoint refuses every request, echoing what it was sent. */
  let providerEchoes = false;

  const remember = (value: unknown, issuedBy?: number) => {
    if (typeof value !== 'string' || value.length < 12) return;
    if (!secrets.has(value)) secrets.set(value, issuedBy);
  };
  const rememberFields = (record: unknown, issuedBy?: number) => {
    if (!record || typeof record !== 'object') return;
    for (const [name, value] of Object.entries(record)) {
      if (SECRET_FIELDS.has(name)) remember(value, issuedBy);
      else if (typeof value === 'object') rememberFields(value, issuedBy);
    }
  };

  /** Watches every request the suite sends and every answer it gets: secrets sent or issued are remembered. */
  const watchingFetch: typeof fetch = async (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    const link = /^\/connect\/(?!callback)([^/]+)/.exec(url.pathname);
    if (link) remember(link[1]);
    for (const [name, value] of url.searchParams) if (SECRET_FIELDS.has(name)) remember(value);
    const headers = new Headers(init?.headers);
    const authorization = headers.get('authorization');
    if (authorization) remember(authorization.replace(/^\S+\s+/, ''));
    remember(headers.get('dpop') ?? undefined);
    const cookie = headers.get('cookie');
    if (cookie) remember(cookie.split('=').slice(1).join('='));
    const body = init?.body;
    if (typeof body === 'string') {
      if (body.startsWith('{') || body.startsWith('[')) rememberFields(JSON.parse(body));
      else for (const [name, value] of new URLSearchParams(body)) if (SECRET_FIELDS.has(name)) remember(value);
    }
    const response = await realFetch(input, init);
    const text = await response.clone().text();
    const index = answers.push(`${response.status} ${JSON.stringify([...response.headers])} ${text}`) - 1;
    for (const set of response.headers.getSetCookie()) remember(set.split(';')[0].split('=').slice(1).join('='), index);
    try {
      rememberFields(JSON.parse(text), index);
    } catch {
      // Not JSON (a page).
    }
    return response;
  };

  beforeAll(async () => {
    globalThis.fetch = watchingFetch;
    // Spans go to memory: this provider is the global one, the services' OTLP one is then never used.
    const otel = await import('@opentelemetry/sdk-trace-node');
    exporter = new otel.InMemorySpanExporter();
    tracerProvider = new otel.NodeTracerProvider({ spanProcessors: [new otel.SimpleSpanProcessor(exporter)] });
    tracerProvider.register();

    payments = await startPaymentsUpstream(PAYMENTS_SECRET);
    const chatBasic = `Basic ${Buffer.from(`writ-chat:${CHAT_SECRET}`).toString('base64')}`;
    const chatTokens = new Set<string>();
    chat = await startMockUpstream((headers) => headers.authorization === chatBasic || chatTokens.has(String(headers.authorization).replace(/^Bearer /, '')), {
      'POST /oauth/token': (_request, response) => {
        const token = `chat_at_${randomBytes(12).toString('hex')}`;
        chatTokens.add(token);
        issuedTokens.push(token);
        json(response, 200, { access_token: token, token_type: 'Bearer', expires_in: 3600 });
      },
      'POST /api/messages': (_request, response) => json(response, 200, { ok: true }),
    });
    // The provider of connected accounts: its first access token is refused upstream (401), so that
    // the gateway refreshes it with the refresh token and resends.
    const fresh = new Set<string>();
    provider = await startMockUpstream(() => true, {
      'POST /token': (request: ReceivedRequest, response) => {
        const form = new URLSearchParams(request.body.toString('utf8'));
        if (providerEchoes) {
          // A provider that repeats what it was sent in its error (some do: "invalid refresh token xyz").
          const sent = [form.get('code'), form.get('code_verifier'), form.get('refresh_token'), request.headers.authorization].filter(Boolean).join(' ');
          return json(response, 400, { error: 'invalid_grant', error_description: `not accepted: ${sent}` });
        }
        const access = `up_at_${randomBytes(12).toString('hex')}`;
        const refresh = `up_rt_${randomBytes(12).toString('hex')}`;
        issuedTokens.push(access, refresh);
        if (form.get('grant_type') === 'refresh_token') fresh.add(access);
        json(response, 200, { access_token: access, refresh_token: refresh, token_type: 'Bearer', expires_in: 3600 });
      },
      'GET /api/me': (request, response) => {
        const token = String(request.headers.authorization).replace(/^Bearer /, '');
        if (!fresh.has(token)) return json(response, 401, { error: 'invalid_token' });
        json(response, 200, { login: 'alice' });
      },
    });
    hooks = await startMockUpstream(() => true, { [`POST /hooks/${WEBHOOK_PATH_SECRET}`]: (_request, response) => json(response, 500, {}) });

    services = await startTestServices({
      gateway: createGatewayApp,
      admin: createAdminApp,
      logSink: (line) => logs.push(line),
      logSinkLevel: 'trace',
      env: {
        WRIT_MASTER_KEY: MASTER_KEY,
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9',
        WRIT_APPROVAL_WEBHOOK_URL: `${hooks.url}/hooks/${WEBHOOK_PATH_SECRET}`,
        WRIT_APPROVAL_WEBHOOK_SECRET: WEBHOOK_SECRET,
        WRIT_APPROVAL_WEBHOOK_BACKOFF_MS: '50',
        WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS: '2',
      },
    });
    world = await seedClients(services.runtime.pool);
    idp = await startIdentityProvider(services.runtime.pool, IDP);
  });

  afterAll(async () => {
    globalThis.fetch = realFetch;
    await services?.close();
    await tracerProvider?.shutdown();
    for (const server of [payments, chat, provider, hooks]) await server?.close();
    await idp?.close();
  });

  const admin = (method: string, path: string, body?: unknown, token = services.adminToken) => sendJson(method, `${services.adminUrl}${path}`, body, token);

  it('runs the main flows', async () => {
    // Admin: connectors with their upstream credentials, an admin token, used and refused.
    await registerConnector(services, {
      id: 'payments',
      name: 'Payments',
      base_url: payments.url,
      credential: { type: 'bearer', token: PAYMENTS_SECRET },
      operations: [PAYOUTS_CREATE, { name: 'payouts.get', method: 'GET', path: '/v1/payouts/{id}', risk: 'read', constraints: {} }],
    });
    await registerConnector(services, {
      id: 'chat',
      name: 'Chat',
      base_url: chat.url,
      credential: { type: 'oauth2_client_credentials', token_url: `${chat.url}/oauth/token`, client_id: 'writ-chat', client_secret: CHAT_SECRET },
      operations: [{ name: 'messages.post', method: 'POST', path: '/api/messages', risk: 'write', constraints: {} }],
    });
    await registerConnector(services, {
      id: 'codehost',
      name: 'Code host',
      base_url: provider.url,
      credential: {
        type: 'oauth2_authorization_code',
        authorization_url: `${provider.url}/authorize`,
        token_url: `${provider.url}/token`,
        client_id: 'writ-upstream',
        client_secret: PROVIDER_SECRET,
        scopes: ['repo:read'],
      },
      operations: [{ name: 'me.get', method: 'GET', path: '/api/me', risk: 'read', constraints: {} }],
    });
    const created = await admin('POST', '/v1/admin-tokens', { name: 'ci', role: 'operator' });
    expect(created.status).toBe(201);
    expect((await admin('GET', '/v1/admin-tokens/self', undefined, created.body.token)).status).toBe(200);
    expect((await admin('DELETE', `/v1/admin-tokens/${created.body.id}`)).status).toBe(204);
    expect((await admin('GET', '/v1/agents', undefined, created.body.token)).status).toBe(401);
    expect((await admin('GET', '/v1/agents', undefined, `${services.adminToken}x`)).status).toBe(401);
    // A connector whose update is refused: its credential is echoed nowhere.
    const refusedCredential = { type: 'bearer', token: `sk_refused_${randomBytes(12).toString('hex')}`, scheme: 'Token' };
    expect((await admin('PATCH', '/v1/connectors/payments', { base_url: 'https://elsewhere.example', credential: refusedCredential })).status).toBe(400);
    expect((await admin('PATCH', '/v1/connectors/payments', { credential: { type: 'bearer', token: 7 } })).status).toBe(400);

    // Client credentials, a task, a Bearer exchange and a gateway call; refusals on the way.
    const task = await createTask(services, world.orchestrator);
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(exchanged.status).toBe(200);
    const token: string = exchanged.body.access_token;
    const payoutsUrl = `${services.gatewayUrl}/connectors/payments/v1/payouts`;
    const payout = JSON.stringify({ destination: 'acct_1', amount: 100, currency: 'usd' });
    const pay = (headers: Record<string, string>) =>
      http(payoutsUrl, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: payout });
    expect((await pay({ authorization: `Bearer ${token}` })).status).toBe(201);
    expect((await pay({ authorization: `Bearer ${task.task_token}` })).status).toBe(401);
    expect((await pay({ authorization: `Bearer ${token.slice(0, -4)}AAAA` })).status).toBe(401);
    // Credentials where they do not belong: in the query string of the gateway and the token endpoint.
    const live = await tokenRequest(
      services.issuer,
      world.agent,
      exchangeFields(task.task_token, [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }]),
    );
    expect((await http(`${services.gatewayUrl}/connectors/payments/v1/payouts/po_1?access_token=${live.body.access_token}`)).status).toBe(400);
    const queryAssertion = new URLSearchParams(await clientAuthFields(world.agent.id, world.agent.key, services.issuer));
    expect((await postForm(`${services.issuer}/oauth2/token?${queryAssertion.toString()}`, { grant_type: 'client_credentials', scope: 'tasks' })).status).toBe(
      400,
    );
    // The same assertion twice: the replay is refused.
    const fields = { ...exchangeFields(task.task_token, PAYOUT_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) };
    expect((await postForm(`${services.issuer}/oauth2/token`, fields)).status).toBe(200);
    expect((await postForm(`${services.issuer}/oauth2/token`, fields)).status).toBe(401);
    // A task token where an access token goes, and an access token as subject token.
    expect((await tokenRequest(services.issuer, world.agent, exchangeFields(token, PAYOUT_REQUEST))).status).toBe(400);
    expect((await tokenRequest(services.issuer, world.otherAgent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(400);

    // DPoP: bound at the token endpoint, used at the gateway, a replayed proof refused.
    const key = await dpopKey();
    const tokenUrl = `${services.issuer}/oauth2/token`;
    const bound = await postForm(
      tokenUrl,
      { ...exchangeFields(task.task_token, PAYOUT_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
      { dpop: await proof(key, 'POST', tokenUrl) },
    );
    expect(bound.status).toBe(200);
    const boundToken: string = bound.body.access_token;
    const callProof = await proof(key, 'POST', payoutsUrl, boundToken);
    expect((await pay({ authorization: `DPoP ${boundToken}`, dpop: callProof })).status).toBe(201);
    expect((await pay({ authorization: `DPoP ${boundToken}`, dpop: callProof })).status).toBe(401);
    expect((await pay({ authorization: `Bearer ${boundToken}` })).status).toBe(401);

    // Introspection and revocation, then the revoked token at the gateway.
    const introspect = await postForm(`${services.issuer}/oauth2/introspect`, {
      token,
      ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
    });
    expect(introspect.status).toBe(200);
    const revoked = await postForm(`${services.issuer}/oauth2/revoke`, {
      token,
      ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
    });
    expect(revoked.status).toBe(200);
    expect((await pay({ authorization: `Bearer ${token}` })).status).toBe(401);

    // Client-credentials upstream: the gateway fetches its token with the client secret.
    const chatAllowed = [{ type: 'connector', connector: 'chat', actions: ['messages.post'] }];
    const chatTask = await createTask(services, world.orchestrator, { allowed: chatAllowed });
    const chatToken = await tokenRequest(services.issuer, world.agent, exchangeFields(chatTask.task_token, chatAllowed));
    expect(chatToken.status).toBe(200);
    const message = await http(`${services.gatewayUrl}/connectors/chat/api/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${chatToken.body.access_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'hi' }),
    });
    expect(message.status).toBe(200);

    // The connect flow (code and PKCE verifier), then a connected-account call refreshed once.
    const { callback, cookie } = await startConnecting(services, 'alice');
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(200);
    const redeemed = provider.received.find((request) => request.url === '/token');
    rememberFields(Object.fromEntries(new URLSearchParams(redeemed!.body.toString('utf8'))));
    // The same callback again: refused, the code not echoed.
    expect((await fetch(callback, { headers: { cookie } })).status).toBe(400);
    const codehostAllowed = [{ type: 'connector', connector: 'codehost', actions: ['me.get'] }];
    const userCredential = await credentialForUser(services, world.orchestrator, world.agent, { issuer: IDP, subject: 'alice', key: idp.key }, codehostAllowed);
    const me = await http(`${services.gatewayUrl}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${userCredential}` } });
    expect(me.status).toBe(200);
    for (const request of provider.received.filter((received) => received.url === '/token')) {
      rememberFields(Object.fromEntries(new URLSearchParams(request.body.toString('utf8'))));
    }

    // A connect link asked for over HTTP with a signed user token, then opened in the browser.
    const userToken = await new SignJWT({ sub: 'dave' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(IDP)
      .setAudience('writ')
      .setExpirationTime('5m')
      .sign(idp.key);
    const tasksApiToken = (await tokenRequest(services.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' })).body.access_token;
    const linked = await sendJson('POST', `${services.issuer}/v1/connections/links`, { connector_id: 'codehost', user_token: userToken }, tasksApiToken);
    expect(linked.status).toBe(201);
    remember(new URL(linked.body.url).pathname.split('/').pop(), answers.length - 1);
    const opened = await fetch(linked.body.url, { method: 'POST', redirect: 'manual', headers: { origin: new URL(services.issuer).origin } });
    expect(opened.status).toBe(303);
    // Opened again: refused, the link named nowhere.
    expect((await fetch(linked.body.url, { method: 'POST', redirect: 'manual', headers: { origin: new URL(services.issuer).origin } })).status).toBe(400);

    // A provider that echoes the code, the PKCE verifier, the refresh token and its client
    // authentication in its error: none of them reaches the agent, the page, a log or an event.
    const echoed = await startConnecting(services, 'bob');
    echoed.callback.searchParams.set('code', `code_${randomBytes(12).toString('hex')}`);
    providerEchoes = true;
    const refusedPage = await fetch(echoed.callback, { headers: { cookie: echoed.cookie } });
    expect(refusedPage.status).toBe(400);
    providerEchoes = false;
    const carol = await startConnecting(services, 'carol');
    carol.callback.searchParams.set('code', `code_${randomBytes(12).toString('hex')}`);
    expect((await fetch(carol.callback, { headers: { cookie: carol.cookie } })).status).toBe(200);
    providerEchoes = true;
    const carolCredential = await credentialForUser(
      services,
      world.orchestrator,
      world.agent,
      { issuer: IDP, subject: 'carol', key: idp.key },
      codehostAllowed,
    );
    const broken = await http(`${services.gatewayUrl}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${carolCredential}` } });
    expect(broken.status).toBe(403);
    providerEchoes = false;
    for (const request of provider.received.filter((received) => received.url === '/token')) {
      rememberFields(Object.fromEntries(new URLSearchParams(request.body.toString('utf8'))));
      remember(String(request.headers.authorization).replace(/^Basic /, ''));
    }

    // An approval announced to the webhook (which fails: its failure is recorded).
    await requireApprovalAbove(services, 10);
    const pendingTask = await createTask(services, world.orchestrator);
    const pending = await tokenRequest(services.issuer, world.agent, exchangeFields(pendingTask.task_token, PAYOUT_REQUEST));
    expect(pending.body.error).toBe('authorization_pending');
    await eventually(
      () => hooks.received.length,
      (count) => count >= 2,
      10_000,
    );

    // The task ends: every credential revoked.
    const tasksToken = (await tokenRequest(services.issuer, world.orchestrator, { grant_type: 'client_credentials', scope: 'tasks' })).body.access_token;
    expect((await sendJson('POST', `${services.issuer}/v1/tasks/${task.task_id}/complete`, undefined, tasksToken)).status).toBe(200);
    expect((await pay({ authorization: `DPoP ${boundToken}`, dpop: await proof(key, 'POST', payoutsUrl, boundToken) })).status).toBe(401);
  });

  it('shows no secret in any log line, span, metric, audit event or other answer', async () => {
    for (const value of [
      PAYMENTS_SECRET,
      CHAT_SECRET,
      PROVIDER_SECRET,
      WEBHOOK_SECRET,
      WEBHOOK_PATH_SECRET,
      MASTER_KEY,
      services.adminToken,
      ...issuedTokens,
    ]) {
      remember(value);
    }
    const password = new URL(services.db.serviceUrl ?? services.db.url).password;
    if (password) remember(decodeURIComponent(password));
    // Enough of every kind was seen for the search to mean something.
    expect(secrets.size).toBeGreaterThan(30);

    const metrics = (await Promise.all([services.authUrl, services.gatewayUrl, services.adminUrl].map((url) => scrape(url)))).join('\n');
    await tracerProvider.forceFlush();
    const spans = exporter
      .getFinishedSpans()
      .map((span) => JSON.stringify({ name: span.name, attributes: span.attributes, events: span.events, status: span.status, links: span.links }));
    const events = (await services.runtime.pool.query(`SELECT * FROM audit_events ORDER BY seq`)).rows.map((row) => JSON.stringify(row));
    expect(logs.length).toBeGreaterThan(20);
    expect(spans.length).toBeGreaterThan(20);
    expect(events.length).toBeGreaterThan(20);

    const places: Record<string, string[]> = { log: logs, span: spans, metrics: [metrics], audit: events };
    const found: string[] = [];
    for (const [secret, issuedBy] of secrets) {
      const forms = new Set([secret, Buffer.from(secret).toString('base64'), Buffer.from(secret).toString('base64url'), encodeURIComponent(secret)]);
      // A JWT's signature is what makes it usable: it alone is searched too.
      const parts = secret.split('.');
      if (parts.length === 3 && parts[2].length >= 40) forms.add(parts[2]);
      for (const [place, texts] of Object.entries({ ...places, answer: answers.filter((_answer, index) => index !== issuedBy) })) {
        for (const text of texts) {
          const form = [...forms].find((candidate) => text.includes(candidate));
          if (form) {
            found.push(`${place}: ${secret.slice(0, 12)}… in ${text.slice(0, 400)}`);
            break;
          }
        }
      }
    }
    expect(found).toEqual([]);
  });

  /** A request with any method, `Host` and path (as a raw client sends them); resolves with the status. */
  const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  afterAll(() => keepAlive.destroy());
  function raw(base: string, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<number> {
    const url = new URL(base);
    return new Promise((resolve) => {
      const req = httpRequest({ host: url.hostname, port: url.port, method, path, headers, agent: method === 'CONNECT' ? false : keepAlive }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      });
      // CONNECT has no handler: Node closes the socket.
      req.on('error', () => resolve(0));
      req.end(body);
    });
  }

  /** The series of every metric of a service: `name{labels}` lines, without values. */
  async function series(): Promise<Set<string>> {
    const texts = await Promise.all([services.authUrl, services.gatewayUrl, services.adminUrl].map((url) => scrape(url)));
    const found = new Set<string>();
    texts.forEach((text, index) => {
      for (const line of text.split('\n')) {
        // The process's own (GC kinds, heap spaces) come and go with the runtime, not with callers.
        if (line && !line.startsWith('#') && !/^writ_(nodejs|process)_/.test(line)) found.add(`${index} ${line.slice(0, line.lastIndexOf(' '))}`);
      }
    });
    return found;
  }

  it('keeps every metric label set bounded whatever paths, methods, hosts, connectors and errors callers send', async () => {
    const task = await createTask(services, world.orchestrator);
    // A read credential, not spent by its refusals: a verified caller outside the catalogue.
    const reads = [{ type: 'connector', connector: 'payments', actions: ['payouts.get'] }];
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, reads));
    expect(exchanged.status).toBe(200);
    const token: string = exchanged.body.access_token;
    expect(await raw(services.gatewayUrl, 'GET', `/connectors/payments/${randomBytes(6).toString('hex')}`, { authorization: `Bearer ${token}` })).toBe(403);
    /** One round: every kind of caller-chosen text, each value fresh. */
    const round = async () => {
      const salt = () => randomBytes(6).toString('hex');
      const sends: (() => Promise<number>)[] = [];
      for (let i = 0; i < 40; i += 1) {
        for (const base of [services.authUrl, services.gatewayUrl, services.adminUrl]) {
          sends.push(() => raw(base, 'GET', `/${salt()}/${salt()}`, { host: `${salt()}.example` }));
          sends.push(() => raw(base, 'POST', `/connectors/${salt()}/x`, { 'x-request-id': salt() }));
        }
        // A guessed connector, with no token and with a valid token of another connector.
        sends.push(() => raw(services.gatewayUrl, 'GET', `/connectors/${salt()}/v1/${salt()}`, { authorization: `Bearer ${salt()}` }));
        sends.push(() => raw(services.gatewayUrl, 'GET', `/connectors/${salt()}/v1/payouts`, { authorization: `Bearer ${token}` }));
        // A verified token, paths and methods outside the catalogue.
        sends.push(() => raw(services.gatewayUrl, 'GET', `/connectors/payments/${salt()}`, { authorization: `Bearer ${token}` }));
        sends.push(() => raw(services.gatewayUrl, 'PROPFIND', `/connectors/payments/v1/payouts/${salt()}`, { authorization: `Bearer ${token}` }));
        // Token requests naming unknown connectors, grant types and error-provoking parameters.
        const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
        const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };
        sends.push(async () =>
          raw(
            services.authUrl,
            'POST',
            '/oauth2/token',
            formHeaders,
            form({
              ...exchangeFields(task.task_token, [{ type: 'connector', connector: salt(), actions: [salt()] }]),
              ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
            }),
          ),
        );
        sends.push(() => raw(services.authUrl, 'POST', '/oauth2/token', formHeaders, form({ grant_type: salt(), client_id: salt(), scope: salt() })));
        sends.push(() => raw(services.authUrl, 'POST', '/oauth2/token', formHeaders, form({ grant_type: 'client_credentials', client_assertion: salt() })));
      }
      // Every method Node's parser lets through, on every service.
      for (const method of METHODS)
        for (const base of [services.authUrl, services.gatewayUrl, services.adminUrl]) sends.push(() => raw(base, method, `/${salt()}`));
      for (let at = 0; at < sends.length; at += 16) await Promise.all(sends.slice(at, at + 16).map((send) => send()));
      return sends.length;
    };
    const sent = await round();
    expect(sent).toBeGreaterThan(500);
    const after = await series();
    await round();
    const grown = [...(await series())].filter((line) => !after.has(line));
    // Label sets are Writ's own: a second round of fresh values adds no series (latency buckets aside, none are new).
    expect(grown).toEqual([]);
    expect(after.size).toBeLessThan(3000);
  });
});
