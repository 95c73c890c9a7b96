import { connect } from 'node:net';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, registerConnector, seedClients, World } from './support/grant-flow';
import { MockUpstream, ReceivedRequest, startMockUpstream } from './support/mock-upstreams';
import { http, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_platform_secret_4a1d';

/**
 * Headers that switch whose authority a call runs under (Stripe Connect's `Stripe-Account`,
 * `OpenAI-Organization`, `X-Tenant-ID`...): a credential for one operation constrained to one
 * account must not let the agent pick another account by adding a header. Sent over real HTTP
 * (node:http, which sends repeated headers and `Connection` as given) through a real gateway to
 * a recording upstream.
 */
describe('headers that switch authority', () => {
  let services: TestServices;
  let upstream: MockUpstream;
  let world: World;

  const operations = [
    {
      name: 'payouts.create',
      method: 'POST',
      path: '/v1/payouts',
      risk: 'write',
      constraints: {
        destination: { in: 'body', field: 'destination', op: 'eq' },
        account: { in: 'header', field: 'Stripe-Account', op: 'eq' },
      },
      // Its header constraint's header is allowed without being listed.
      request_headers: ['Idempotency-Key'],
    },
    {
      name: 'charges.create',
      method: 'POST',
      path: '/v1/charges',
      risk: 'write',
      constraints: {},
      request_headers: ['Idempotency-Key', 'stripe-version'],
    },
    {
      name: 'balance.get',
      method: 'GET',
      path: '/v1/balance',
      risk: 'read',
      constraints: { accounts: { in: 'header', field: 'stripe-account', op: 'in' } },
    },
  ];
  const allowed = [
    { type: 'connector', connector: 'connect', actions: ['payouts.create'], constraints: { destination: 'acct_1', account: 'acct_1' } },
    { type: 'connector', connector: 'connect', actions: ['balance.get'], constraints: { accounts: ['acct_1', 'acct_2'] } },
    { type: 'connector', connector: 'connect', actions: ['charges.create'] },
  ];
  async function exchange(details: Record<string, unknown>, taskAllowed: unknown[] = allowed): Promise<TestResponse> {
    const task = await createTask(services, world.orchestrator, { allowed: taskAllowed });
    return tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [{ type: 'connector', connector: 'connect', ...details }]));
  }
  async function credential(details: Record<string, unknown>, taskAllowed: unknown[] = allowed): Promise<string> {
    const response = await exchange(details, taskAllowed);
    if (response.status !== 200) throw new Error(`exchange failed: ${response.text}`);
    return response.body.access_token as string;
  }
  const payout = () => credential({ actions: ['payouts.create'], constraints: { destination: 'acct_1', account: 'acct_1' } });
  const PAYOUT = '{"destination":"acct_1","amount":100}';

  /** Over a raw socket, with headers as a raw list: repeats, cases and Connection are sent exactly as given. */
  function send(method: string, path: string, headers: string[], body = ''): Promise<TestResponse> {
    const url = new URL(services.gatewayUrl);
    const lines = [`${method} ${path} HTTP/1.1`, `Host: ${url.host}`];
    const all = [...headers, 'Content-Length', String(Buffer.byteLength(body))];
    for (let index = 0; index < all.length; index += 2) lines.push(`${all[index]}: ${all[index + 1]}`);
    // Connection: close ends the exchange; a test's own Connection header comes first and wins for the gateway.
    if (!headers.some((name, index) => index % 2 === 0 && name.toLowerCase() === 'connection')) lines.push('Connection: close');
    return new Promise((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname, () => socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`));
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', reject);
      socket.on('close', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const split = raw.indexOf('\r\n\r\n');
        const head = raw.slice(0, split);
        let text = raw.slice(split + 4);
        if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
          let decoded = '';
          for (let rest = text; ;) {
            const end = rest.indexOf('\r\n');
            const size = parseInt(rest.slice(0, end), 16);
            if (!size) break;
            decoded += rest.slice(end + 2, end + 2 + size);
            rest = rest.slice(end + 4 + size);
          }
          text = decoded;
        }
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: Number(head.split(' ')[1]), headers: new Headers(), body: parsed, text } as TestResponse);
      });
    });
  }
  const postPayout = (token: string, headers: string[]) =>
    send('POST', '/connectors/connect/v1/payouts', ['authorization', `Bearer ${token}`, 'content-type', 'application/json', ...headers], PAYOUT);
  const getBalance = (token: string, headers: string[]) => send('GET', '/connectors/connect/v1/balance', ['authorization', `Bearer ${token}`, ...headers]);

  /** The values of `name` (any case, `_` for `-`) the upstream received. */
  const upstreamValues = (request: ReceivedRequest, name: string): string[] =>
    request.rawHeaders.flatMap((value, index) => (index % 2 === 0 && value.toLowerCase().replace(/_/g, '-') === name ? [request.rawHeaders[index + 1]] : []));

  async function lastRefusal(): Promise<Record<string, unknown>> {
    const { rows } = await services.runtime.pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'gateway.call' AND outcome = 'denied' ORDER BY seq DESC LIMIT 1`,
    );
    return rows[0].data;
  }

  /** Expects `response` refused with `status` and nothing sent upstream since `before`. */
  async function expectRefused(before: number, response: TestResponse, status: number, rule?: string, reason?: string): Promise<void> {
    expect({ status: response.status, error: response.body?.error }).toEqual({ status, error: status === 403 ? 'insufficient_scope' : 'invalid_request' });
    if (rule) expect(response.body.rule).toBe(rule);
    expect(await lastRefusal()).toMatchObject({ status, ...(rule ? { rule } : {}), ...(reason ? { reason } : {}) });
    expect(upstream.received.length).toBe(before);
  }

  beforeAll(async () => {
    upstream = await startMockUpstream(() => true, {
      'POST /v1/payouts': (_request, response) => {
        response.writeHead(201, { 'content-type': 'application/json' });
        response.end('{}');
      },
      'POST /v1/charges': (_request, response) => {
        response.writeHead(201, { 'content-type': 'application/json' });
        response.end('{}');
      },
      'GET /v1/balance': (_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end('{}');
      },
    });
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    world = await seedClients(services.runtime.pool);
    await registerConnector(services, { id: 'connect', name: 'Connect', base_url: upstream.url, credential: { type: 'bearer', token: SECRET }, operations });
  });

  afterAll(async () => {
    await services?.close();
    await upstream?.close();
  });

  describe('header constraints', () => {
    it('forwards the granted account once, with exactly the checked value', async () => {
      const token = await payout();
      const before = upstream.received.length;
      const response = await postPayout(token, ['stripe-account', 'acct_1']);
      expect(response.status).toBe(201);
      expect(upstream.received.length).toBe(before + 1);
      const received = upstream.received[before];
      expect(upstreamValues(received, 'stripe-account')).toEqual(['acct_1']);
      expect(received.headers.authorization).toBe(`Bearer ${SECRET}`);
    });

    it('refuses the Stripe-Account attack: the granted destination, another connected account', async () => {
      const token = await payout();
      const before = upstream.received.length;
      await expectRefused(before, await postPayout(token, ['Stripe-Account', 'acct_other']), 403, 'constraint:account');
    });

    it('refuses a call without the header (it would run under the platform account)', async () => {
      const token = await payout();
      const before = upstream.received.length;
      await expectRefused(before, await postPayout(token, []), 403, 'constraint:account');
    });

    it.each([
      ['the header twice', ['Stripe-Account', 'acct_1', 'Stripe-Account', 'acct_other']],
      ['the header twice in two cases', ['Stripe-Account', 'acct_1', 'STRIPE-ACCOUNT', 'acct_other']],
      ['the header again with _ for - (Rack, CGI)', ['Stripe-Account', 'acct_1', 'Stripe_Account', 'acct_other']],
      ['a comma-joined list', ['Stripe-Account', 'acct_1,acct_other']],
      ['a Connection header that would strip it', ['Stripe-Account', 'acct_1', 'Connection', 'Stripe-Account']],
      ['a Connection header that would strip it, spelled with _', ['Stripe-Account', 'acct_1', 'Connection', 'keep-alive, stripe_account']],
    ])('refuses %s, naming the constraint', async (_label, headers) => {
      const token = await payout();
      const before = upstream.received.length;
      await expectRefused(before, await postPayout(token, headers), 403, 'constraint:account', 'ambiguous_header');
    });

    it('checks an `in` set, and refuses the header when the grant leaves the constraint out', async () => {
      const some = await credential({ actions: ['balance.get'], constraints: { accounts: ['acct_2'] } });
      let before = upstream.received.length;
      expect((await getBalance(some, ['Stripe-Account', 'acct_2'])).status).toBe(200);
      expect(upstreamValues(upstream.received[before], 'stripe-account')).toEqual(['acct_2']);
      before = upstream.received.length;
      await expectRefused(before, await getBalance(some, ['Stripe-Account', 'acct_1']), 403, 'constraint:accounts');

      // No value granted for the header: the call runs under the platform's own account only.
      const none = await credential({ actions: ['balance.get'] }, [{ type: 'connector', connector: 'connect', actions: ['balance.get'] }]);
      before = upstream.received.length;
      expect((await getBalance(none, [])).status).toBe(200);
      expect(upstreamValues(upstream.received[before], 'stripe-account')).toEqual([]);
      before = upstream.received.length;
      await expectRefused(before, await getBalance(none, ['Stripe-Account', 'acct_1']), 403, 'constraint:accounts', 'header_not_granted');
    });

    it('keeps token exchange inside the task: another account or a wider set is refused', async () => {
      const wrong = await exchange({ actions: ['payouts.create'], constraints: { destination: 'acct_1', account: 'acct_other' } });
      expect({ status: wrong.status, error: wrong.body.error }).toEqual({ status: 400, error: 'invalid_authorization_details' });
      const wider = await exchange({ actions: ['balance.get'], constraints: { accounts: ['acct_1', 'acct_3'] } });
      expect({ status: wider.status, error: wider.body.error }).toEqual({ status: 400, error: 'invalid_authorization_details' });
      const missing = await exchange({ actions: ['payouts.create'], constraints: { destination: 'acct_1' } });
      expect({ status: missing.status, error: missing.body.error }).toEqual({ status: 400, error: 'invalid_authorization_details' });
    });

    it('refuses a header constraint on an MCP tool with a 400 naming the field', async () => {
      const response = await sendJson(
        'POST',
        `${services.adminUrl}/v1/connectors`,
        {
          id: 'tools',
          kind: 'mcp',
          name: 'Tools',
          base_url: 'https://mcp.example/mcp',
          operations: [{ name: 'lookup', risk: 'read', constraints: { account: { in: 'header', field: 'Stripe-Account', op: 'eq' } } }],
        },
        services.adminToken,
      );
      expect(response.status).toBe(400);
      expect(JSON.stringify(response.body)).toContain('operations[0].constraints.account.in');
    });
  });

  describe('request_headers: an allowlist per operation', () => {
    const charge = () => credential({ actions: ['charges.create'] });
    const postCharge = (token: string, headers: string[]) =>
      send('POST', '/connectors/connect/v1/charges', ['authorization', `Bearer ${token}`, 'content-type', 'application/json', ...headers], '{"amount":1}');

    it('forwards the listed headers (any case) and the safe set, and drops what the gateway always drops', async () => {
      const token = await charge();
      const before = upstream.received.length;
      const response = await postCharge(token, [
        'IDEMPOTENCY-KEY',
        'key-1',
        'Stripe-Version',
        '2024-06-20',
        'Accept',
        'application/json',
        'User-Agent',
        'agent/1.0',
        'If-None-Match',
        '"v1"',
        'X-Forwarded-For',
        '203.0.113.9',
        'Connection',
        'close',
      ]);
      expect(response.status).toBe(201);
      expect(upstream.received.length).toBe(before + 1);
      const received = upstream.received[before].headers;
      expect(received).toMatchObject({
        'idempotency-key': 'key-1',
        'stripe-version': '2024-06-20',
        accept: 'application/json',
        'user-agent': 'agent/1.0',
        'if-none-match': '"v1"',
        authorization: `Bearer ${SECRET}`,
      });
      expect(received['x-forwarded-for']).toBeUndefined();
    });

    it.each([
      ['Stripe-Account', ['Stripe-Account', 'acct_other']],
      ['stripe_account', ['stripe_account', 'acct_other']],
      ['OpenAI-Organization', ['Accept', '*/*', 'OpenAI-Organization', 'org_other']],
      ['X-Tenant-ID', ['X-Tenant-ID', 'tenant_other']],
      ['Stripe-Account', ['Stripe-Account', 'acct_other', 'Connection', 'Stripe-Account']],
      ['Range', ['Range', 'bytes=0-10']],
    ])('refuses an unlisted %s with 400 naming it, never silently dropping it', async (name, headers) => {
      const token = await charge();
      const before = upstream.received.length;
      const response = await postCharge(token, headers);
      await expectRefused(before, response, 400, undefined, 'header_not_allowed');
      expect(response.body.field).toBe(`header.${name}`);
      expect(response.body.error_description).toContain(name);
    });

    it('takes a call from a fetch client (the SDK agent): the fetch metadata it adds selects nothing', async () => {
      // Node's fetch, as browsers, adds Sec-Fetch-Mode to every request; the SDK's Agent calls through it.
      const token = await charge();
      const before = upstream.received.length;
      const response = await fetch(`${services.gatewayUrl}/connectors/connect/v1/charges`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': 'key-2' },
        body: '{"amount":1}',
      });
      expect(response.status).toBe(201);
      expect(upstream.received[before].headers['sec-fetch-mode']).toBe('cors');
    });

    it('lets the header of a header constraint through an allowlist, and still checks it', async () => {
      // Write credentials are one-use: one for the call that passes, one for the refusals.
      let before = upstream.received.length;
      expect((await postPayout(await payout(), ['Stripe-Account', 'acct_1', 'Idempotency-Key', 'k'])).status).toBe(201);
      expect(upstreamValues(upstream.received[before], 'stripe-account')).toEqual(['acct_1']);
      const token = await payout();
      before = upstream.received.length;
      await expectRefused(before, await postPayout(token, ['Stripe-Account', 'acct_other']), 403, 'constraint:account');
      before = upstream.received.length;
      const unlisted = await postPayout(token, ['Stripe-Account', 'acct_1', 'X-Tenant-ID', 't']);
      await expectRefused(before, unlisted, 400, undefined, 'header_not_allowed');
    });

    it('without request_headers, forwards other headers as before (compatibility)', async () => {
      const token = await credential({ actions: ['balance.get'] }, [{ type: 'connector', connector: 'connect', actions: ['balance.get'] }]);
      const before = upstream.received.length;
      expect((await getBalance(token, ['X-Custom', 'yes'])).status).toBe(200);
      expect(upstream.received[before].headers['x-custom']).toBe('yes');
    });

    it('is in the admin OpenAPI document: request_headers on http operations and mcp tools, header among constraint locations', async () => {
      const schemas = (await http(`${services.adminUrl}/docs-json`)).body.components.schemas as Record<string, { properties?: Record<string, unknown> }>;
      type Operation = { properties: Record<string, { enum?: string[]; additionalProperties?: { properties: { in: { enum: string[] } } } }> };
      const operations = schemas.CreateConnectorDto.properties!.operations as { items: { oneOf: Operation[] } };
      const [httpOperation, tool] = operations.items.oneOf;
      expect(httpOperation.properties.request_headers).toMatchObject({ type: 'array', maxItems: 64 });
      expect(httpOperation.properties.constraints.additionalProperties!.properties.in.enum).toEqual(['path', 'query', 'body', 'header']);
      expect(tool.properties.request_headers).toMatchObject({ type: 'array', maxItems: 64 });
      expect(tool.properties.constraints.additionalProperties!.properties.in.enum).toEqual(['arguments']);
    });

    it('checks request_headers on an MCP tool as on an operation, and names the bad entries of a list', async () => {
      const tool = await sendJson(
        'POST',
        `${services.adminUrl}/v1/connectors`,
        {
          id: 'tools2',
          kind: 'mcp',
          name: 'Tools',
          base_url: 'https://mcp.example/mcp',
          operations: [{ name: 'lookup', risk: 'read', request_headers: ['X-A', 'Authorization'] }],
        },
        services.adminToken,
      );
      expect(tool.status).toBe(400);
      expect((tool.body.fields as Array<{ field: string }>).map((error) => error.field)).toEqual(['operations[0].request_headers[1]']);
      const bad = await sendJson(
        'POST',
        `${services.adminUrl}/v1/connectors`,
        {
          id: 'bad-list',
          name: 'Bad',
          base_url: upstream.url,
          operations: [{ name: 'a', method: 'GET', path: '/a', risk: 'read', request_headers: ['X-Ok', 'Authorization', 'X Bad', 'x_ok'] }],
        },
        services.adminToken,
      );
      expect(bad.status).toBe(400);
      expect((bad.body.fields as Array<{ field: string }>).map((entry) => entry.field)).toEqual([
        'operations[0].request_headers[1]',
        'operations[0].request_headers[2]',
        'operations[0].request_headers[3]',
      ]);
    });

    it('revokes the credentials of an operation whose request_headers change, but not for a change of case', async () => {
      const catalogue = (listed: string[]) => [{ name: 'charges.create', method: 'POST', path: '/v1/charges', risk: 'write', request_headers: listed }];
      const created = await sendJson(
        'POST',
        `${services.adminUrl}/v1/connectors`,
        { id: 'widening', name: 'Widening', base_url: upstream.url, credential: { type: 'bearer', token: SECRET }, operations: catalogue(['Idempotency-Key']) },
        services.adminToken,
      );
      expect(created.status).toBe(201);
      const entry = [{ type: 'connector', connector: 'widening', actions: ['charges.create'] }];
      const issue = async () => {
        const task = await createTask(services, world.orchestrator, { allowed: entry });
        const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, entry));
        expect(response.status).toBe(200);
        return response.body.access_token as string;
      };
      const call = (token: string) =>
        send('POST', '/connectors/widening/v1/charges', ['authorization', `Bearer ${token}`, 'content-type', 'application/json'], '{}');
      const patch = (listed: string[]) =>
        sendJson('PATCH', `${services.adminUrl}/v1/connectors/widening`, { operations: catalogue(listed) }, services.adminToken);

      const kept = await issue();
      expect((await patch(['IDEMPOTENCY-KEY'])).status).toBe(200);
      expect((await call(kept)).status).toBe(201);

      const widened = await issue();
      expect((await patch(['IDEMPOTENCY-KEY', 'Stripe-Account'])).status).toBe(200);
      const refused = await call(widened);
      expect({ status: refused.status, error: refused.body.error }).toEqual({ status: 401, error: 'invalid_token' });

      const unlisted = await issue();
      const patched = await sendJson(
        'PATCH',
        `${services.adminUrl}/v1/connectors/widening`,
        { operations: [{ name: 'charges.create', method: 'POST', path: '/v1/charges', risk: 'write' }] },
        services.adminToken,
      );
      expect(patched.status).toBe(200);
      expect((await call(unlisted)).status).toBe(401);
    });
  });
});
