import * as net from 'node:net';
import { clientAuthFields, createClientKey, jwksOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_ALLOWED, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, postForm, TestResponse, tokenRequest } from './support/oauth-client';
import { setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_hostile_input_5e1d';
const PAYOUT = '{"destination":"acct_1","amount":42000,"currency":"usd"}';

/** The status line and body of a request written byte for byte (fetch cannot repeat a header). */
function rawRequest(url: string, head: string[], body = ''): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      const lines = [...head, `Host: ${hostname}:${port}`, `Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close'];
      socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
    });
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => resolve({ status: Number(data.split(' ')[1]), body: data.slice(data.indexOf('\r\n\r\n') + 4) }));
    socket.on('error', reject);
  });
}

/**
 * Hostile encodings and input shapes that earlier passes left open: a form body in another
 * charset than UTF-8, single-valued headers sent twice (Node keeps the first, others the last),
 * and numbers that a double cannot hold (checked, stored and audited as another number).
 */
describe('hostile input', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let tasks: string;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ admin: createAdminApp, gateway: createGatewayApp });
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    tasks = await tasksToken(services, world.orchestrator);
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  const count = async (sql: string) => Number((await services.runtime.pool.query<{ n: string }>(sql)).rows[0].n);
  const json = (method: string, url: string, body: string | Buffer, token: string) =>
    http(url, { method, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body });
  const taskBody = (allowed: unknown, extra = '') =>
    `{"agent_id":"agent-1","purpose":"pay INV-42","ttl_seconds":600,"allowed":${typeof allowed === 'string' ? allowed : JSON.stringify(allowed)}${extra}}`;
  const credential = async () => {
    const task = await createTask(services, world.orchestrator);
    const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
    expect(response.status).toBe(200);
    return response.body.access_token as string;
  };

  describe('an OAuth form body is UTF-8 (RFC 6749 Appendix B)', () => {
    // Fails without the fix: the body was read as UTF-8 whatever its declared charset, and a token issued.
    it.each(['utf-16', 'iso-8859-1', 'windows-1252'])('refuses a token request declared in charset %s, and issues nothing', async (charset) => {
      const task = await createTask(services, world.orchestrator);
      const before = await count('SELECT count(*) AS n FROM access_tokens');
      const fields = { ...exchangeFields(task.task_token, PAYOUT_REQUEST), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) };
      const response = await postForm(`${services.issuer}/oauth2/token`, fields, { 'content-type': `application/x-www-form-urlencoded; charset=${charset}` });
      expect(response.status).toBe(400);
      expect(response.body).toEqual({ error: 'invalid_request', error_description: `unsupported charset "${charset}": the form body must be UTF-8` });
      expect(await count('SELECT count(*) AS n FROM access_tokens')).toBe(before);
    });

    it('refuses it at introspection and revocation too, and still reads charset=UTF-8', async () => {
      const auth = await clientAuthFields(world.agent.id, world.agent.key, services.issuer);
      for (const endpoint of ['introspect', 'revoke']) {
        const refused = await postForm(
          `${services.issuer}/oauth2/${endpoint}`,
          { token: 'x', ...auth },
          { 'content-type': 'application/x-www-form-urlencoded;charset=utf-16le' },
        );
        expect([endpoint, refused.status, refused.body.error]).toEqual([endpoint, 400, 'invalid_request']);
      }
      const fresh = await clientAuthFields(world.agent.id, world.agent.key, services.issuer);
      const accepted = await postForm(
        `${services.issuer}/oauth2/introspect`,
        { token: 'x', ...fresh },
        { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' },
      );
      expect(accepted.status).toBe(200);
      expect(accepted.body).toEqual({ active: false });
    });
    // Fails without the fix: the first charset (utf-8) was taken and the task stored.
    it('refuses a JSON body naming two charsets, even when the first says UTF-8', async () => {
      const before = await count('SELECT count(*) AS n FROM tasks');
      const response = await http(`${services.issuer}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json; charset=utf-8; charset=utf-16', authorization: `Bearer ${tasks}` },
        body: taskBody(PAYOUT_ALLOWED),
      });
      expect(response.status).toBe(415);
      expect(response.body).toEqual({ error: 'invalid_request', error_description: 'unsupported charset "utf-8, utf-16": JSON bodies are UTF-8' });
      expect(await count('SELECT count(*) AS n FROM tasks')).toBe(before);
    });
  });

  describe('a single-valued header sent twice is refused, not read as its first copy', () => {
    // Each fails without the fix: Node kept the first copy and the request went through.
    it('two Authorization headers at the Tasks API: 400 naming the header, no task stored', async () => {
      const before = await count('SELECT count(*) AS n FROM tasks');
      const response = await rawRequest(
        services.issuer,
        ['POST /v1/tasks HTTP/1.1', `Authorization: Bearer ${tasks}`, 'Authorization: Bearer forged', 'Content-Type: application/json'],
        taskBody(PAYOUT_ALLOWED),
      );
      expect(response.status).toBe(400);
      expect(JSON.parse(response.body)).toEqual({ error: 'invalid_request', error_description: 'the authorization header is sent more than once' });
      expect(await count('SELECT count(*) AS n FROM tasks')).toBe(before);
    });

    it('two Content-Type headers at the gateway: 400, and nothing is forwarded', async () => {
      const token = await credential();
      const forwarded = upstream.received.length;
      const response = await rawRequest(
        services.gatewayUrl,
        ['POST /connectors/payments/v1/payouts HTTP/1.1', `Authorization: Bearer ${token}`, 'Content-Type: application/json', 'Content-Type: text/plain'],
        PAYOUT,
      );
      expect(response.status).toBe(400);
      expect(JSON.parse(response.body)).toMatchObject({ error: 'invalid_request', error_description: 'the content-type header is sent more than once' });
      expect(upstream.received.length).toBe(forwarded);
    });

    it('two Authorization headers at the gateway, and two DPoP headers at the token endpoint', async () => {
      const token = await credential();
      const forwarded = upstream.received.length;
      const gateway = await rawRequest(
        services.gatewayUrl,
        ['POST /connectors/payments/v1/payouts HTTP/1.1', `Authorization: Bearer ${token}`, 'Authorization: Bearer other', 'Content-Type: application/json'],
        PAYOUT,
      );
      expect(gateway.status).toBe(400);
      expect(upstream.received.length).toBe(forwarded);
      const form = new URLSearchParams({
        grant_type: 'client_credentials',
        scope: 'tasks',
        ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, services.issuer)),
      });
      const dpop = await rawRequest(
        services.issuer,
        ['POST /oauth2/token HTTP/1.1', 'Content-Type: application/x-www-form-urlencoded', 'DPoP: a.b.c', 'DPoP: d.e.f'],
        form.toString(),
      );
      expect(dpop.status).toBe(400);
      expect(JSON.parse(dpop.body)).toEqual({ error: 'invalid_request', error_description: 'the dpop header is sent more than once' });
    });

    it('two Authorization headers at the admin API: 400', async () => {
      const response = await rawRequest(services.adminUrl, [
        'GET /v1/agents HTTP/1.1',
        `Authorization: Bearer ${services.adminToken}`,
        'Authorization: Bearer x',
      ]);
      expect(response.status).toBe(400);
    });

    it('still serves the same requests with each header once, and repeated list-valued headers', async () => {
      const response = await rawRequest(
        services.gatewayUrl,
        [
          'POST /connectors/payments/v1/payouts HTTP/1.1',
          `Authorization: Bearer ${await credential()}`,
          'Content-Type: application/json',
          'Accept: application/json',
          'Accept: */*',
        ],
        PAYOUT,
      );
      expect(response.status).toBe(201);
    });
  });

  describe('request framing the gateway and an upstream could read apart (smuggling)', () => {
    /** Writes `raw` (a whole request, framing included) on one connection and reads every response on it. */
    const framed = (raw: string): Promise<string> => {
      const { hostname, port } = new URL(services.gatewayUrl);
      return new Promise((resolve, reject) => {
        const socket = net.connect(Number(port), hostname, () => socket.write(raw));
        let data = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => (data += chunk));
        socket.on('end', () => resolve(data));
        socket.on('close', () => resolve(data));
        socket.on('error', reject);
        setTimeout(() => socket.destroy(), 3000);
      });
    };
    const head = (token: string, lines: string[]) =>
      [
        'POST /connectors/payments/v1/payouts HTTP/1.1',
        `Host: ${new URL(services.gatewayUrl).host}`,
        `Authorization: Bearer ${token}`,
        'Content-Type: application/json',
        ...lines,
      ].join('\r\n') + '\r\n\r\n';
    // A second request hidden in the first one's body: it must never reach the upstream unchecked.
    // Sent with a Host the gateway answers for (an IP literal), so that a smuggled request would be served.
    const hidden = 'GET /v1/balance HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    const chunked = (body: string) => `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`;

    it.each([
      ['Content-Length and Transfer-Encoding', ['Content-Length: 4', 'Transfer-Encoding: chunked'], chunked(PAYOUT) + hidden],
      ['two different Content-Lengths', [`Content-Length: ${PAYOUT.length}`, `Content-Length: ${PAYOUT.length + hidden.length}`], PAYOUT + hidden],
      ['a Content-Length list', [`Content-Length: ${PAYOUT.length}, ${PAYOUT.length}`], PAYOUT],
      ['Transfer-Encoding chunked then identity', ['Transfer-Encoding: chunked, identity'], chunked(PAYOUT) + hidden],
      ['an obs-folded Transfer-Encoding', ['Transfer-Encoding:', ' chunked'], chunked(PAYOUT) + hidden],
      ['a Transfer-Encoding with a space before the colon', ['Transfer-Encoding : chunked'], chunked(PAYOUT) + hidden],
      ['a chunk size with a bare LF', ['Transfer-Encoding: chunked'], `${PAYOUT.length.toString(16)}\n${PAYOUT}\r\n0\r\n\r\n${hidden}`],
    ])('refuses %s with 400, forwarding nothing', async (_name, lines, body) => {
      const token = await credential();
      const forwarded = upstream.received.length;
      const response = await framed(head(token, lines) + body);
      expect(response).toMatch(/^HTTP\/1\.1 400 /);
      expect(response.match(/HTTP\/1\.1 /g)).toHaveLength(1);
      expect(upstream.received.length).toBe(forwarded);
    });

    it('forwards a chunked body with chunk extensions once, as its decoded bytes with their length', async () => {
      const token = await credential();
      const forwarded = upstream.received.length;
      const [first, second] = [PAYOUT.slice(0, 10), PAYOUT.slice(10)];
      const body = `${first.length.toString(16)};ext="a"\r\n${first}\r\n${second.length.toString(16)};x\r\n${second}\r\n0\r\n\r\n`;
      const response = await framed(head(token, ['Transfer-Encoding: chunked', 'Connection: close']) + body);
      expect(response).toMatch(/^HTTP\/1\.1 201 /);
      expect(upstream.received.length).toBe(forwarded + 1);
      const received = upstream.received[upstream.received.length - 1];
      expect(received.body.toString('utf8')).toBe(PAYOUT);
      expect(received.headers['content-length']).toBe(String(PAYOUT.length));
      expect(received.headers['transfer-encoding']).toBeUndefined();
    });
  });

  describe('a number is kept as it was sent, or refused', () => {
    // Each fails without the fix: the number was rounded to a double, then checked, stored and audited.
    it('refuses a task constraint past 2^53, naming the member, and stores nothing', async () => {
      const before = await count('SELECT count(*) AS n FROM tasks');
      const allowed = JSON.stringify(PAYOUT_ALLOWED).replace('50000', '9007199254740993');
      const response = await json('POST', `${services.issuer}/v1/tasks`, taskBody(allowed), tasks);
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([
        { field: 'allowed[0].constraints.amount_max', message: 'is a number that cannot be kept exactly (it would read as 9007199254740992)' },
      ]);
      expect(await count('SELECT count(*) AS n FROM tasks')).toBe(before);
    });

    it('refuses an underflow and excess precision in metadata and ttl_seconds', async () => {
      const metadata = await json('POST', `${services.issuer}/v1/tasks`, taskBody(PAYOUT_ALLOWED, ',"metadata":{"ratio":0.30000000000000001}'), tasks);
      expect(metadata.status).toBe(400);
      expect(metadata.body.fields).toEqual([{ field: 'metadata.ratio', message: 'is a number that cannot be kept exactly (it would read as 0.3)' }]);
      const ttl = await json('POST', `${services.issuer}/v1/tasks`, taskBody(PAYOUT_ALLOWED).replace('"ttl_seconds":600', '"ttl_seconds":1e-400'), tasks);
      expect(ttl.status).toBe(400);
      expect(ttl.body.fields).toEqual([{ field: 'ttl_seconds', message: 'is a number that cannot be kept exactly (it would read as 0)' }]);
    });

    it('refuses it in authorization_details, naming the member, and issues nothing', async () => {
      const task = await createTask(services, world.orchestrator);
      const before = await count('SELECT count(*) AS n FROM access_tokens');
      const details = JSON.stringify(PAYOUT_REQUEST).replace('42000', '42000.000000000000001');
      const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, details));
      expect(response.status).toBe(400);
      expect(response.body).toEqual({
        error: 'invalid_authorization_details',
        error_description: 'authorization_details[0].constraints.amount_max is a number that cannot be kept exactly (it would read as 42000)',
      });
      expect(await count('SELECT count(*) AS n FROM access_tokens')).toBe(before);
    });

    it('refuses it in an admin body', async () => {
      const response = await json('POST', `${services.adminUrl}/v1/policies/evaluate`, '{"input":{"amount":18446744073709551617}}', services.adminToken);
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([
        { field: 'input.amount', message: 'is a number that cannot be kept exactly (it would read as 18446744073709552000)' },
      ]);
    });

    it('still accepts numbers a double holds exactly, in any notation JSON allows', async () => {
      const allowed = JSON.stringify(PAYOUT_ALLOWED).replace('50000', '5.0e4');
      const response = await json(
        'POST',
        `${services.issuer}/v1/tasks`,
        taskBody(allowed, ',"metadata":{"ratio":0.3,"max":9007199254740991}').replace('600', '600.0'),
        tasks,
      );
      expect(response.status).toBe(201);
      const stored = await http(`${services.issuer}/v1/tasks/${response.body.task_id}`, { headers: { authorization: `Bearer ${tasks}` } });
      expect(stored.body.allowed[0].constraints.amount_max).toBe(50000);
    });
  });

  describe('a connector URL is stored as it is reached', () => {
    // Fails without the fix: each was stored as written (201) while the gateway would reach another host or path.
    it.each([
      ['https://раypal.example/', 'must be ASCII (an internationalised host in its xn-- form: xn--ypal-43d9g.example)'],
      ['https://api\uff0epayments.example/', 'must be ASCII (an internationalised host in its xn-- form: api.payments.example)'],
      ['http://0x7f.1:9/', 'must name its host as it is reached (127.0.0.1:9)'],
      ['https://api.example/v1/%2e%2e/admin/', 'must have its path in normal form (no dot segments, encoded dots or backslashes)'],
    ])('refuses the base_url %s, naming where it would go, and stores nothing', async (baseUrl, message) => {
      const response = await json(
        'POST',
        `${services.adminUrl}/v1/connectors`,
        JSON.stringify({ id: 'lookalike', name: 'PayPal', base_url: baseUrl, operations: [{ name: 'a', method: 'GET', path: '/a', risk: 'read' }] }),
        services.adminToken,
      );
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'base_url', message }]);
      expect(await count("SELECT count(*) AS n FROM connectors WHERE id = 'lookalike'")).toBe(0);
    });
  });

  describe('a catalogue does not hold two operations one case apart', () => {
    // Fails without the fix: stored (201); a task, a grant or policy data naming one reads as the other to a person.
    it('refuses payouts.create beside Payouts.Create, naming the field', async () => {
      const response = await json(
        'POST',
        `${services.adminUrl}/v1/connectors`,
        JSON.stringify({
          id: 'cased',
          name: 'Cased',
          base_url: 'https://api.payments.example',
          operations: [
            { name: 'payouts.create', method: 'POST', path: '/v1/payouts', risk: 'write' },
            { name: 'Payouts.Create', method: 'POST', path: '/v2/payouts', risk: 'read' },
          ],
        }),
        services.adminToken,
      );
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'operations[1].name', message: 'duplicates operations[0].name (ignoring case)' }]);
    });
  });

  describe('a dotted body field is not also sent under its dotted name', () => {
    // Fails without the fix: the gateway checked meta.currency = usd and forwarded "meta.currency": "eur",
    // which Laravel's $request->input('meta.currency') and lodash's _.get read first.
    it('refuses the payout with 403 ambiguous, forwards nothing, and passes it without the alias', async () => {
      const created = await json(
        'POST',
        `${services.adminUrl}/v1/connectors`,
        JSON.stringify({
          id: 'nested',
          name: 'Nested payments',
          base_url: upstream.url,
          credential: { type: 'bearer', token: SECRET },
          operations: [
            {
              name: 'payouts.create',
              method: 'POST',
              path: '/v1/payouts',
              risk: 'write',
              constraints: { currency: { in: 'body', field: 'meta.currency', op: 'eq' } },
            },
          ],
        }),
        services.adminToken,
      );
      expect(created.status).toBe(201);
      const entry = { type: 'connector', connector: 'nested', actions: ['payouts.create'], constraints: { currency: 'usd' } };
      const nestedCredential = async () => {
        const task = await createTask(services, world.orchestrator, { allowed: [entry] });
        const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [entry]));
        expect(response.status).toBe(200);
        return response.body.access_token as string;
      };
      const forwarded = upstream.received.length;
      const refused = await json(
        'POST',
        `${services.gatewayUrl}/connectors/nested/v1/payouts`,
        '{"destination":"acct_1","amount":1,"meta":{"currency":"usd"},"meta.currency":"eur"}',
        await nestedCredential(),
      );
      expect(refused.status).toBe(403);
      expect(refused.body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:currency' });
      expect(refused.body.error_description).toBe(
        'body field meta.currency is also sent as the member "meta.currency" (some upstreams read a dotted key as the path)',
      );
      expect(upstream.received.length).toBe(forwarded);
      const passed = await json(
        'POST',
        `${services.gatewayUrl}/connectors/nested/v1/payouts`,
        '{"destination":"acct_1","amount":1,"meta":{"currency":"usd"}}',
        await nestedCredential(),
      );
      expect(passed.status).toBe(201);
    });
  });

  describe('a name people read is not blank and has no control characters', () => {
    // Fails without the fix: each was stored (201 or 200), listing as no name at all or with a terminal escape.
    it('refuses blank or control-character names of agents, orchestrators and admin tokens, storing nothing', async () => {
      const jwks = jwksOf(await createClientKey());
      const before = await count('SELECT (SELECT count(*) FROM agents) + (SELECT count(*) FROM orchestrators) + (SELECT count(*) FROM admin_tokens) AS n');
      for (const [path, body, message] of [
        ['/v1/agents', { id: 'blank-agent', name: '   ', jwks }, 'name must not be blank'],
        ['/v1/orchestrators', { id: 'escape-orch', name: 'orch\u001b[2J', jwks, allowed_agents: ['*'] }, 'name must not contain control characters'],
        ['/v1/admin-tokens', { name: '\t', role: 'viewer' }, 'name must not be blank'],
        ['/v1/admin-tokens', { name: 'ci\ndeployer', role: 'admin' }, 'name must not contain control characters'],
      ] as const) {
        const response = await json('POST', `${services.adminUrl}${path}`, JSON.stringify(body), services.adminToken);
        expect([path, response.status, response.body.fields]).toEqual([path, 400, [{ field: 'name', message }]]);
      }
      const renamed = await json('PATCH', `${services.adminUrl}/v1/agents/agent-2`, '{"name":" "}', services.adminToken);
      expect(renamed.status).toBe(400);
      expect(renamed.body.fields).toEqual([{ field: 'name', message: 'name must not be blank' }]);
      expect(await count('SELECT (SELECT count(*) FROM agents) + (SELECT count(*) FROM orchestrators) + (SELECT count(*) FROM admin_tokens) AS n')).toBe(
        before,
      );
    });
  });

  describe('a client assertion jti is stored as it was checked', () => {
    // Fails without the fix: the first was accepted and its jti stored as U+FFFD by PostgreSQL,
    // so the second (another jti) was refused as its replay.
    it('refuses a jti holding a lone surrogate (invalid_client), and stores none', async () => {
      for (const jti of ['run-\ud800', 'run-\udbff']) {
        const response = await postForm(`${services.issuer}/oauth2/token`, {
          grant_type: 'client_credentials',
          scope: 'tasks',
          ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, services.issuer, { claims: { jti } })),
        });
        expect(response.status).toBe(401);
        expect(response.body).toEqual({
          error: 'invalid_client',
          error_description: 'client assertion jti must be a non-empty string of at most 256 characters',
        });
      }
      expect(await count("SELECT count(*) AS n FROM client_assertion_jtis WHERE jti LIKE 'run-%'")).toBe(0);
    });
  });

  // Regression guards: these passed before this suite, on paths no other suite attacks.
  describe('other hostile shapes (guards)', () => {
    it('a body with an encoded lone surrogate (ED A0 80) is a 400 naming the body', async () => {
      const [head, tail] = taskBody(PAYOUT_ALLOWED).split('INV-42');
      const response = await json(
        'POST',
        `${services.issuer}/v1/tasks`,
        Buffer.concat([Buffer.from(head), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(tail)]),
        tasks,
      );
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'body', message: 'is not valid UTF-8' }]);
    });

    it('authorization_details with a byte order mark or a trailing NUL is not JSON', async () => {
      const task = await createTask(services, world.orchestrator);
      for (const details of [`\ufeff${JSON.stringify(PAYOUT_REQUEST)}`, `${JSON.stringify(PAYOUT_REQUEST)}\u0000`]) {
        const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, details));
        expect(response.body).toEqual({ error: 'invalid_authorization_details', error_description: 'authorization_details is not valid JSON' });
      }
    });

    it('a query parameter repeated at the admin API is named, not merged', async () => {
      const response = await http(`${services.adminUrl}/v1/agents?limit=1&limit=2`, { headers: { authorization: `Bearer ${services.adminToken}` } });
      expect(response.status).toBe(400);
      expect([...new Set((response.body.fields as Array<{ field: string }>).map((entry) => entry.field))]).toEqual(['limit']);
    });

    it('introspection of a token holding NUL or a lone surrogate is inactive, never a 500', async () => {
      for (const token of ['a\u0000b', '\ud800x', 'x'.repeat(30_000)]) {
        const response = await postForm(`${services.issuer}/oauth2/introspect`, {
          token,
          ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
        });
        expect(response.status).toBe(200);
        expect(response.body).toEqual({ active: false });
      }
    });

    it('the connect callback answers 400 to repeated, array and NUL state, never a 500', async () => {
      for (const query of ['state=a&state=b&code=c', 'state[]=a&code=c', 'state=%00&code=c', 'state=%ED%A0%80&code=c']) {
        const response: TestResponse = await http(`${services.issuer}/connect/callback?${query}`);
        expect([query, response.status]).toEqual([query, 400]);
      }
    });

    it('the audit chain still verifies after all of it, refusals quoting lone surrogates and NUL included', async () => {
      const before = await count('SELECT count(*) AS n FROM audit_events');
      for (const clientId of ['\ud800', 'agent-1\u0000', '\udfffx']) {
        const response = await postForm(`${services.issuer}/oauth2/token`, {
          grant_type: 'client_credentials',
          scope: 'tasks',
          ...(await clientAuthFields(clientId, world.agent.key, services.issuer)),
        });
        expect(response.status).toBe(401);
      }
      expect(await count('SELECT count(*) AS n FROM audit_events')).toBeGreaterThan(before);
      const response = await http(`${services.adminUrl}/v1/audit/verify`, { headers: { authorization: `Bearer ${services.adminToken}` } });
      expect(response.status).toBe(200);
      expect(response.body.valid).toBe(true);
    });
  });
});
