import { request as httpRequest } from 'node:http';
import { gzipSync } from 'node:zlib';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, registerConnector, seedClients, World } from './support/grant-flow';
import { MockUpstream, startMockUpstream } from './support/mock-upstreams';
import { http, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { PAYMENTS_OPERATIONS } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_differential_secret_5e7c';

/**
 * Parser differentials: requests the gateway's parsers read one way and common upstream
 * frameworks another (Go and ASP.NET fold JSON keys, Rails/Laravel/Flask merge query and
 * body, `_method`, Rack's `_` in header names, `;` in queries, PHP's parameter names,
 * Tomcat's `..;`, an empty `in` set, special address ranges). Each is sent over real HTTP
 * through a real gateway to a recording upstream: it is refused with its reason audited, and
 * the upstream receives nothing; the legitimate request beside it still passes.
 */
describe('parser differentials', () => {
  let services: TestServices;
  let upstream: MockUpstream;
  let world: World;

  const operations = [
    ...PAYMENTS_OPERATIONS,
    { name: 'whoami', method: 'GET', path: '/v1/whoami', risk: 'read', constraints: {} },
    { name: 'list', method: 'GET', path: '/v1/items', risk: 'read', constraints: { repo: { in: 'query', field: 'repo', op: 'eq' } } },
    { name: 'items.create', method: 'POST', path: '/v1/items', risk: 'write', constraints: { project: { in: 'query', field: 'project', op: 'eq' } } },
    { name: 'tag', method: 'POST', path: '/v1/tags', risk: 'write', constraints: { repos: { in: 'body', field: 'repos', op: 'in' } } },
    { name: 'items.get', method: 'GET', path: '/v1/items/{item_id}', risk: 'read', constraints: {} },
    { name: 'items.export', method: 'GET', path: '/v1/items/export', risk: 'read', constraints: {} },
    { name: 'payouts.refund_all', method: 'POST', path: '/v1/payouts/all/refund', risk: 'write', constraints: {} },
    {
      name: 'payouts.update',
      method: 'POST',
      path: '/v1/payouts/{payout_id}',
      risk: 'write',
      constraints: { payout: { in: 'path', field: 'payout_id', op: 'eq' } },
    },
  ];
  const allowed = [
    { type: 'connector', connector: 'probe', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' } },
    { type: 'connector', connector: 'probe', actions: ['whoami', 'payouts.refund'] },
    { type: 'connector', connector: 'probe', actions: ['list'], constraints: { repo: 'allowed' } },
    { type: 'connector', connector: 'probe', actions: ['items.create'], constraints: { project: 'allowed' } },
    { type: 'connector', connector: 'probe', actions: ['tag'], constraints: { repos: ['allowed'] } },
    { type: 'connector', connector: 'probe', actions: ['payouts.get', 'payouts.update'], constraints: { payout: 'po_1' } },
    { type: 'connector', connector: 'probe', actions: ['items.get'] },
  ];
  async function credential(details: Record<string, unknown>): Promise<string> {
    const task = await createTask(services, world.orchestrator, { allowed });
    const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [{ type: 'connector', connector: 'probe', ...details }]));
    if (response.status !== 200) throw new Error(`exchange failed: ${response.text}`);
    return response.body.access_token;
  }
  const payout = () => credential({ actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 30000, currency: 'usd' } });
  const lister = () => credential({ actions: ['list'], constraints: { repo: 'allowed' } });
  const gateway = (method: string, path: string, token: string, body?: string, headers: Record<string, string> = {}): Promise<TestResponse> =>
    http(`${services.gatewayUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body,
    });
  const PAYOUT = '{"destination":"acct_1","amount":100,"currency":"usd"}';

  /** The last refused `gateway.call` event. */
  async function lastRefusal(): Promise<Record<string, unknown>> {
    const { rows } = await services.runtime.pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'gateway.call' AND outcome = 'denied' ORDER BY seq DESC LIMIT 1`,
    );
    return rows[0].data;
  }

  /** Sends `send`, expects it refused (status, error, reason, rule), audited with its reason, and nothing upstream. */
  async function expectRefused(send: () => Promise<TestResponse>, status: number, reason: string, rule?: string): Promise<TestResponse> {
    const before = upstream.received.length;
    const response = await send();
    expect({ status: response.status, error: response.body?.error }).toEqual({
      status,
      error: status === 403 ? 'insufficient_scope' : 'invalid_request',
    });
    expect(response.body.error_description).toEqual(expect.any(String));
    if (rule) expect(response.body.rule).toBe(rule);
    expect(await lastRefusal()).toMatchObject({ status, reason, ...(rule ? { rule } : {}) });
    expect(upstream.received.length).toBe(before);
    return response;
  }

  /** Sends `send`, expects it forwarded once with `status`. */
  async function expectForwarded(send: () => Promise<TestResponse>, status: number) {
    const before = upstream.received.length;
    const response = await send();
    expect(response.status).toBe(status);
    expect(upstream.received.length).toBe(before + 1);
    return upstream.received[upstream.received.length - 1];
  }

  beforeAll(async () => {
    const json = (status: number, body: string) => (_request: unknown, response: import('node:http').ServerResponse) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(body);
    };
    upstream = await startMockUpstream(() => true, {
      'GET /v1/whoami': json(200, '{}'),
      'POST /v1/payouts': json(201, '{"ok":true}'),
      'GET /v1/items': json(200, '[]'),
      'POST /v1/items': json(201, '{}'),
      'POST /v1/tags': json(200, '{}'),
      'GET /v1/payouts/[a-z0-9_]+': json(200, '{}'),
      'POST /v1/payouts/[a-z0-9_]+': json(200, '{}'),
      'GET /v1/items/[A-Za-z0-9_.;=]+': json(200, '{}'),
    });
    services = await startTestServices({
      gateway: createGatewayApp,
      admin: createAdminApp,
      // Several refusals come before the token is read (anonymous): audit each of them.
      env: { WRIT_THROTTLE_AUDIT_EVENTS: '1000', WRIT_THROTTLE_SOURCE_FAILURES: '1000' },
    });
    world = await seedClients(services.runtime.pool);
    await registerConnector(services, { id: 'probe', name: 'probe', base_url: upstream.url, credential: { type: 'bearer', token: SECRET }, operations });
  });

  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  describe('JSON keys equal once case is folded (Go encoding/json, ASP.NET)', () => {
    it.each([
      ['Amount beside amount', '{"destination":"acct_1","amount":100,"currency":"usd","Amount":99999999,"Destination":"acct_evil"}'],
      ['a long s for s', '{"destination":"acct_1","amount":100,"currency":"usd","de\\u017ftination":"acct_evil"}'],
      ['a Kelvin sign for k', '{"destination":"acct_1","amount":100,"currency":"usd","meta":{"kind":"a","\\u212aind":"b"}}'],
    ])('refuses %s', async (_name, body) => {
      const token = await payout();
      const response = await expectRefused(() => gateway('POST', '/connectors/probe/v1/payouts', token, body), 400, 'body_not_strict_json');
      expect(response.body.error_description).toMatch(/^the body repeats the key /);
    });

    it('passes nested objects with distinct keys, the same key in different objects', async () => {
      const body = '{"destination":"acct_1","amount":100,"currency":"usd","meta":{"id":"a","ID2":"b","inner":{"amount":1}},"lines":[{"id":1},{"id":2}]}';
      const received = await expectForwarded(async () => gateway('POST', '/connectors/probe/v1/payouts', await payout(), body), 201);
      expect(received.body.toString('utf8')).toBe(body);
    });
  });

  describe('a constrained name in the query and in the body (Rails, Laravel, Flask merge them)', () => {
    it('refuses a body-bound amount and destination sent again in the query', async () => {
      const token = await payout();
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/payouts?amount=99999999&destination=acct_evil', token, PAYOUT),
        403,
        'field_in_two_places',
        'constraint:destination',
      );
    });

    it('refuses it in another case and with a [] suffix', async () => {
      const token = await payout();
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/payouts?AMOUNT%5B%5D=99999999', token, PAYOUT),
        403,
        'field_in_two_places',
        'constraint:amount_max',
      );
    });

    it('refuses a query-bound project sent again as a top-level body member (JSON or form)', async () => {
      const token = await credential({ actions: ['items.create'], constraints: { project: 'allowed' } });
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/items?project=allowed', token, '{"Project":"evil","title":"x"}'),
        403,
        'field_in_two_places',
        'constraint:project',
      );
      await expectRefused(
        () =>
          gateway('POST', '/connectors/probe/v1/items?project=allowed', token, 'project=evil&title=x', { 'content-type': 'application/x-www-form-urlencoded' }),
        403,
        'field_in_two_places',
        'constraint:project',
      );
      await expectForwarded(() => gateway('POST', '/connectors/probe/v1/items?project=allowed', token, '{"title":"x","projects":["a"]}'), 201);
    });

    it('passes a payout with ordinary query parameters', async () => {
      const received = await expectForwarded(
        async () => gateway('POST', '/connectors/probe/v1/payouts?expand=balance&idempotency=k1', await payout(), PAYOUT),
        201,
      );
      expect(received.url).toBe('/v1/payouts?expand=balance&idempotency=k1');
    });
  });

  describe('a path-bound name also in the query or the body (Rails, Sinatra, Spring merge path parameters with them)', () => {
    const payoutOwner = (action = 'payouts.get') => credential({ actions: [action], constraints: { payout: 'po_1' } });

    it('refuses the path-bound payout_id sent again in the query, in any case or with []', async () => {
      const token = await payoutOwner();
      for (const query of ['payout_id=po_evil', 'PAYOUT_ID=po_evil', 'payout_id%5B%5D=po_evil', '+payout_id=po_evil']) {
        const response = await expectRefused(
          () => gateway('GET', `/connectors/probe/v1/payouts/po_1?${query}`, token),
          403,
          'field_in_two_places',
          'constraint:payout',
        );
        expect(response.body.error_description).toMatch(/^path field payout_id is also sent in the query/);
      }
    });

    it('refuses it sent again as a top-level body member (JSON, form or multipart)', async () => {
      const token = await payoutOwner('payouts.update');
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/payouts/po_1', token, '{"payout_id":"po_evil","note":"x"}'),
        403,
        'field_in_two_places',
        'constraint:payout',
      );
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/payouts/po_1', token, 'Payout_Id=po_evil', { 'content-type': 'application/x-www-form-urlencoded' }),
        403,
        'field_in_two_places',
        'constraint:payout',
      );
      const multipart = '--b\r\ncontent-disposition: form-data; name="payout_id"\r\n\r\npo_evil\r\n--b--\r\n';
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/payouts/po_1', token, multipart, { 'content-type': 'multipart/form-data; boundary=b' }),
        403,
        'field_in_two_places',
        'constraint:payout',
      );
    });

    it('passes the payout with other query parameters and body members', async () => {
      const received = await expectForwarded(
        async () => gateway('GET', '/connectors/probe/v1/payouts/po_1?expand=balance&payout_ids=x', await payoutOwner()),
        200,
      );
      expect(received.url).toBe('/v1/payouts/po_1?expand=balance&payout_ids=x');
      await expectForwarded(
        async () => gateway('POST', '/connectors/probe/v1/payouts/po_1', await payoutOwner('payouts.update'), '{"note":"x","payout":"y"}'),
        200,
      );
    });
  });

  describe('a body the checks cannot read while a body constraint applies', () => {
    /** Sends `body` as raw bytes with exactly the headers given (no content type unless named). */
    const raw = (token: string, body: string, headers: Record<string, string> = {}) =>
      http(`${services.gatewayUrl}/connectors/probe/v1/payouts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, ...headers },
        body: new TextEncoder().encode(body),
      });
    const EVIL = '{"destination":"acct_evil","amount":99999999,"currency":"usd"}';
    it.each([
      ['XML', 'application/xml', '<payout><destination>acct_evil</destination><amount>99999999</amount></payout>'],
      ['multipart', 'multipart/form-data; boundary=b', '--b\r\ncontent-disposition: form-data; name="destination"\r\n\r\nacct_evil\r\n--b--\r\n'],
      ['text/plain holding JSON', 'text/plain', EVIL],
      ['no content type', undefined, EVIL],
      ['JSON in UTF-16 by its charset', 'application/json; charset=utf-16', EVIL],
      ['JSON in latin1 by its charset', 'application/json; charset=iso-8859-1', EVIL],
      ['application/x-json', 'application/x-json', EVIL],
      ['text/json', 'text/json', EVIL],
      ['a +json type outside application/', 'text/vnd.x+json', EVIL],
      ['a json type with another parameter', 'application/json; charset=utf-8; profile=x', EVIL],
    ])('refuses %s with 415, audited, nothing sent or spent', async (_name, type, body) => {
      const token = await payout();
      const response = await expectRefused(() => raw(token, body, type ? { 'content-type': type } : {}), 415, 'body_content_type');
      expect(response.body.error_description).toMatch(/body constraint applies: the body must be application\/json/);
      // The one use of the credential is still there for a body the checks can read.
      await expectForwarded(() => raw(token, PAYOUT, { 'content-type': 'application/json' }), 201);
    });

    it('passes JSON as application/json with a UTF-8 charset, in any case, or as a +json type', async () => {
      for (const type of ['application/json; charset=UTF-8', 'Application/JSON;charset="utf-8"', 'application/vnd.payouts+json']) {
        await expectForwarded(async () => raw(await payout(), PAYOUT, { 'content-type': type }), 201);
      }
    });

    it('refuses a payout without a body as missing its constrained fields', async () => {
      const token = await payout();
      const before = upstream.received.length;
      const response = await gateway('POST', '/connectors/probe/v1/payouts', token);
      expect(response.status).toBe(403);
      expect(response.body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:destination' });
      expect(upstream.received.length).toBe(before);
    });
  });

  describe('body members read by lenient parsers where no body constraint applies', () => {
    const items = () => credential({ actions: ['items.create'], constraints: { project: 'allowed' } });
    const raw = (token: string, body: string, headers: Record<string, string> = {}, bytes?: Buffer) =>
      http(`${services.gatewayUrl}/connectors/probe/v1/items?project=allowed`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, ...headers },
        body: bytes ? new Uint8Array(bytes) : new TextEncoder().encode(body),
      });

    it.each([
      ['a form without a content type (Rack reads a POST without one as a form)', 'project=evil&title=x', undefined],
      ['JSON without a content type', '{"project":"evil"}', undefined],
      ['JSON as text/plain (Flask get_json(force=True), Express json({type: "*/*"}))', '{"Project":"evil"}', 'text/plain'],
      ['JSON with a byte order mark as text/plain (Express and Python json drop it)', '\ufeff{"project":"evil"}', 'text/plain'],
      ['JSON with a byte order mark, without a content type', '\ufeff{"project":"evil"}', undefined],
      ['JSON with NaN as application/octet-stream (Python json reads NaN and Infinity)', '{"project":"evil","n":NaN}', 'application/octet-stream'],
      ['an XML element (Rails XML params)', '<item><project>evil</project></item>', 'application/xml'],
      ['a form name with a %u escape (classic ASP.NET decodes %uXXXX)', '%u0070roject=evil&title=x', 'application/x-www-form-urlencoded'],
      ['a form name with a %u escape, without a content type', '%u0050ROJECT=evil', undefined],
      ['a form name behind ; (Go before 1.17 and Python before 3.9.2 also split forms on it)', 'title=x;project=evil', 'application/x-www-form-urlencoded'],
      ['a form name behind ;, without a content type', 'title=x;project=evil', undefined],
    ])('refuses the query-bound project sent again as %s', async (_name, body, type) => {
      await expectRefused(async () => raw(await items(), body, type ? { 'content-type': type } : {}), 403, 'field_in_two_places', 'constraint:project');
    });

    it.each([
      ['UTF-16LE as application/json', 'application/json', Buffer.from('{"project":"evil"}', 'utf16le')],
      ['UTF-16BE with a byte order mark as text/plain', 'text/plain', Buffer.from('\ufeff{"project":"evil"}', 'utf16le').swap16()],
      ['UTF-32LE without a content type', undefined, Buffer.concat([...'{"project":"evil"}'].map((char) => Buffer.from([char.charCodeAt(0), 0, 0, 0])))],
    ])('refuses the query-bound project sent again as JSON in %s (Python json.loads detects UTF-16 and UTF-32)', async (_name, type, bytes) => {
      await expectRefused(async () => raw(await items(), '', type ? { 'content-type': type } : {}, bytes), 403, 'field_in_two_places', 'constraint:project');
    });

    it('refuses the project in a multipart part named with an escape or in RFC 5987 form', async () => {
      for (const disposition of ['name="pro\\ject"', 'name="%70roject"', "name*=UTF-8''%70roject"]) {
        const body = `--b\r\ncontent-disposition: form-data; ${disposition}\r\n\r\nevil\r\n--b--\r\n`;
        await expectRefused(
          async () => raw(await items(), body, { 'content-type': 'multipart/form-data; boundary=b' }),
          403,
          'field_in_two_places',
          'constraint:project',
        );
      }
    });

    it('refuses a compressed body beside a constrained query (its names cannot be read), and passes one without constraints', async () => {
      const gzipped = gzipSync('project=evil&title=x');
      const send = (token: string, path: string) =>
        http(`${services.gatewayUrl}${path}`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-www-form-urlencoded', 'content-encoding': 'gzip' },
          body: new Uint8Array(gzipped),
        });
      const response = await expectRefused(async () => send(await items(), '/connectors/probe/v1/items?project=allowed'), 415, 'body_content_encoding');
      expect(response.body.error_description).toMatch(/content-encoded/);
      const refund = await credential({ actions: ['payouts.refund'] });
      const received = await expectForwarded(() => send(refund, '/connectors/probe/v1/payouts/po_1/refund'), 404);
      expect(received.headers['content-encoding']).toBe('gzip');
    });

    it.each([
      [
        'a form in UTF-16 (ASP.NET Core reads a form in its charset, and binds form values before the query)',
        'application/x-www-form-urlencoded; charset=utf-16',
        'utf16le',
      ],
      ['a form in UTF-16BE named by a second charset', 'application/x-www-form-urlencoded; charset=utf-8; charset=utf-16be', 'utf16be'],
    ] as const)('refuses the query-bound project sent again in %s: its names cannot be read', async (_name, type, encoding) => {
      const text = 'project=evil&title=x';
      const bytes = encoding === 'utf16le' ? Buffer.from(text, 'utf16le') : Buffer.from(text, 'utf16le').swap16();
      await expectRefused(async () => raw(await items(), '', { 'content-type': type }, bytes), 415, 'body_charset');
    });

    it('passes a form in UTF-8 or US-ASCII by its charset', async () => {
      for (const type of ['application/x-www-form-urlencoded; charset=UTF-8', 'application/x-www-form-urlencoded; charset="us-ascii"']) {
        await expectForwarded(async () => raw(await items(), 'title=x', { 'content-type': type }), 201);
      }
    });

    it('refuses _method in a form without a content type', async () => {
      await expectRefused(async () => raw(await items(), '_method=DELETE&title=x'), 400, 'method_override');
    });

    it('passes a text body that is neither a form without a type nor a JSON object', async () => {
      await expectForwarded(async () => raw(await items(), 'project: evil, in prose', { 'content-type': 'text/plain' }), 201);
      await expectForwarded(async () => raw(await items(), '<item><title>x</title></item>', { 'content-type': 'application/xml' }), 201);
    });
  });

  describe('method overrides', () => {
    it('refuses a _method query parameter, in any case', async () => {
      for (const query of ['_method=DELETE', '_METHOD=DELETE', '_method%5B%5D=DELETE']) {
        const token = await payout();
        await expectRefused(() => gateway('POST', `/connectors/probe/v1/payouts?${query}`, token, PAYOUT), 400, 'method_override');
      }
    });

    it('refuses a _method body member', async () => {
      const token = await payout();
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/payouts', token, '{"destination":"acct_1","amount":100,"currency":"usd","_method":"DELETE"}'),
        400,
        'method_override',
      );
      const refund = await credential({ actions: ['payouts.refund'] });
      await expectRefused(
        () => gateway('POST', '/connectors/probe/v1/payouts/po_1/refund', refund, '_method=DELETE', { 'content-type': 'application/x-www-form-urlencoded' }),
        400,
        'method_override',
      );
    });

    it('refuses x_http_method_override as X-HTTP-Method-Override (Rack and CGI read _ as -)', async () => {
      const token = await payout();
      await expectRefused(
        () =>
          gateway('POST', '/connectors/probe/v1/payouts', token, PAYOUT, {
            x_http_method_override: 'DELETE',
            x_forwarded_for: '127.0.0.1',
            x_original_url: '/admin',
          }),
        400,
        'method_override',
      );
    });

    it('drops x_forwarded_for and x_original_url as their dashed forms are dropped, and keeps other headers', async () => {
      const token = await credential({ actions: ['whoami'] });
      const received = await expectForwarded(
        () =>
          gateway('GET', '/connectors/probe/v1/whoami', token, undefined, {
            x_forwarded_for: '127.0.0.1',
            x_original_url: '/admin',
            x_real_ip: '10.0.0.1',
            x_trace: 'kept',
          }),
        200,
      );
      expect(received.headers.x_forwarded_for).toBeUndefined();
      expect(received.headers.x_original_url).toBeUndefined();
      expect(received.headers.x_real_ip).toBeUndefined();
      expect(received.headers.x_trace).toBe('kept');
    });

    it('drops Client-IP (Rails remote_ip reads it), X-Forwarded and Forwarded-For (read by common PHP code), in either spelling', async () => {
      const token = await credential({ actions: ['whoami'] });
      const received = await expectForwarded(
        () =>
          gateway('GET', '/connectors/probe/v1/whoami', token, undefined, {
            'client-ip': '10.0.0.1',
            'x-forwarded': 'for=10.0.0.2',
            'forwarded-for': '10.0.0.3',
            client_ip: '10.0.0.4',
            'x-trace': 'kept',
          }),
        200,
      );
      expect(received.headers).not.toHaveProperty('client-ip');
      expect(received.headers).not.toHaveProperty('x-forwarded');
      expect(received.headers).not.toHaveProperty('forwarded-for');
      expect(received.headers).not.toHaveProperty('client_ip');
      expect(received.headers['x-trace']).toBe('kept');
    });
  });

  describe('query parameters as lenient parsers read them', () => {
    it('refuses ; in the query (Rack 2, older Python and Go split on it)', async () => {
      const token = await lister();
      await expectRefused(() => gateway('GET', '/connectors/probe/v1/items?repo=allowed&x=1;repo=evil', token), 400, 'target_not_normal');
    });

    it.each([
      ['a case variant (ASP.NET)', 'REPO=evil&repo=allowed'],
      ['a leading-space variant (PHP)', 'repo=allowed&%20repo=evil'],
      ['a bracket variant (PHP, Rails)', 'repo=allowed&repo%5B%5D=evil'],
      ['a plus-encoded leading space (PHP)', 'repo=allowed&+repo=evil'],
    ])('refuses %s of the constrained parameter as a repeated one', async (_name, query) => {
      const token = await lister();
      await expectRefused(() => gateway('GET', `/connectors/probe/v1/items?${query}`, token), 403, 'ambiguous_parameter', 'constraint:repo');
    });

    it('still refuses an exact repetition, and passes an ordinary query', async () => {
      const token = await lister();
      await expectRefused(() => gateway('GET', '/connectors/probe/v1/items?repo=allowed&repo=evil', token), 403, 'ambiguous_parameter', 'constraint:repo');
      const received = await expectForwarded(() => gateway('GET', '/connectors/probe/v1/items?repo=allowed&page=2&sort=name&repos=x&q=a%20b', token), 200);
      expect(received.url).toBe('/v1/items?repo=allowed&page=2&sort=name&repos=x&q=a%20b');
    });

    it('refuses a checked parameter behind 1000 others (Express, PHP and Tomcat drop those past their limit), and passes it as the 1000th', async () => {
      const token = await lister();
      await expectRefused(
        () => gateway('GET', `/connectors/probe/v1/items?${'x&'.repeat(1000)}repo=allowed`, token),
        403,
        'too_many_parameters',
        'constraint:repo',
      );
      await expectRefused(
        () => gateway('GET', `/connectors/probe/v1/items?${'&'.repeat(1000)}repo=allowed`, token),
        403,
        'too_many_parameters',
        'constraint:repo',
      );
      await expectForwarded(() => gateway('GET', `/connectors/probe/v1/items?${'x&'.repeat(999)}repo=allowed`, token), 200);
    });
  });

  describe('path parameters on dot segments (Tomcat, Jetty)', () => {
    it('refuses ..;/ and passes an ordinary refund', async () => {
      const token = await credential({ actions: ['payouts.refund'] });
      await expectRefused(() => gateway('POST', '/connectors/probe/v1/payouts/..;/refund', token), 400, 'target_not_normal');
      await expectRefused(() => gateway('POST', '/connectors/probe/v1/payouts/..;jsessionid=1/refund', token), 400, 'target_not_normal');
      await expectForwarded(() => gateway('POST', '/connectors/probe/v1/payouts/po_1/refund', token), 404);
    });
  });

  describe('a path parameter a lenient router reads as a literal of another operation (Spring, Tomcat, ASP.NET, Rails)', () => {
    it.each([
      ['a ;parameter (Tomcat and Spring strip it)', '/v1/items/export;x=1'],
      ['another case (ASP.NET routes ignore case)', '/v1/items/EXPORT'],
      ['an escaped letter in another case', '/v1/items/%45xport'],
      ['a format suffix (Rails, Spring suffix patterns)', '/v1/items/export.json'],
      ['a trailing dot', '/v1/items/export.'],
    ])('refuses the granted items.get reaching items.export through %s', async (_name, path) => {
      const token = await credential({ actions: ['items.get'] });
      const response = await expectRefused(() => gateway('GET', `/connectors/probe${path}`, token), 403, 'ambiguous_path', 'operation');
      expect(response.body.error_description).toMatch(/items\.export/);
    });

    it('refuses payouts.refund reaching payouts.refund_all through a middle segment', async () => {
      const token = await credential({ actions: ['payouts.refund'] });
      for (const path of ['/v1/payouts/all;x/refund', '/v1/payouts/ALL/refund', '/v1/payouts/All;jsessionid=1/refund']) {
        await expectRefused(() => gateway('POST', `/connectors/probe${path}`, token), 403, 'ambiguous_path', 'operation');
      }
    });

    it('passes ids that no router reads as the literal', async () => {
      const token = await credential({ actions: ['items.get'] });
      for (const path of ['/v1/items/item_1', '/v1/items/exports', '/v1/items/item.json', '/v1/items/report;v=2']) {
        const received = await expectForwarded(() => gateway('GET', `/connectors/probe${path}`, token), 200);
        expect(received.url).toBe(path);
      }
    });
  });

  describe('two templates a path matches (literal segments before parameters, in either order)', () => {
    const get = {
      name: 'items.get',
      method: 'GET',
      path: '/v1/items/{item_id}',
      risk: 'read',
      constraints: { item: { in: 'path', field: 'item_id', op: 'in' } },
    };
    const exportAll = { name: 'items.export', method: 'GET', path: '/v1/items/export', risk: 'write', constraints: {} };
    const orders = [
      ['routes-literal-first', [exportAll, get]],
      ['routes-param-first', [get, exportAll]],
    ] as const;
    const entries = (connector: string) => [
      { type: 'connector', connector, actions: ['items.get'], constraints: { item: ['item_1', 'export'] } },
      { type: 'connector', connector, actions: ['items.export'] },
    ];

    beforeAll(async () => {
      for (const [id, catalogue] of orders) {
        await registerConnector(services, { id, name: id, base_url: upstream.url, credential: { type: 'bearer', token: SECRET }, operations: catalogue });
      }
    });

    async function exchange(connector: string, details: Record<string, unknown>, allowedEntries = entries(connector)): Promise<TestResponse> {
      const task = await createTask(services, world.orchestrator, { allowed: allowedEntries });
      return tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, [{ type: 'connector', connector, ...details }]));
    }

    it.each(orders)('%s: GET /v1/items/export is items.export, refused to an items.get credential', async (id) => {
      const getter = await exchange(id, { actions: ['items.get'], constraints: { item: ['item_1'] } });
      expect(getter.status).toBe(200);
      const before = upstream.received.length;
      const refused = await gateway('GET', `/connectors/${id}/v1/items/export`, getter.body.access_token);
      expect(refused.status).toBe(403);
      expect(refused.body).toMatchObject({ error: 'insufficient_scope', rule: 'action' });
      expect(refused.body.error_description).toMatch(/items\.export/);
      expect(await lastRefusal()).toMatchObject({ status: 403, rule: 'action', operation: 'items.export' });
      expect(upstream.received.length).toBe(before);
      expect((await expectForwarded(() => gateway('GET', `/connectors/${id}/v1/items/item_1`, getter.body.access_token), 200)).url).toBe('/v1/items/item_1');

      const exporter = await exchange(id, { actions: ['items.export'] });
      expect(exporter.status).toBe(200);
      expect((await expectForwarded(() => gateway('GET', `/connectors/${id}/v1/items/export`, exporter.body.access_token), 200)).url).toBe('/v1/items/export');
      // What a lenient upstream router reads as the literal stays refused to the parameter's grant.
      const lenient = await gateway('GET', `/connectors/${id}/v1/items/EXPORT`, getter.body.access_token);
      expect(lenient.body).toMatchObject({ error: 'insufficient_scope', rule: 'operation' });
    });

    it('revokes items.get credentials when items.export is removed (its paths become items.get calls), not when one is added', async () => {
      const id = 'routes-removed';
      const patch = (operations: unknown[]) => sendJson('PATCH', `${services.adminUrl}/v1/connectors/${id}`, { operations }, services.adminToken);
      await registerConnector(services, { id, name: id, base_url: upstream.url, credential: { type: 'bearer', token: SECRET }, operations: [get] });
      const before = await exchange(id, { actions: ['items.get'], constraints: { item: ['item_1'] } }, entries(id).slice(0, 1));
      expect(before.status).toBe(200);
      // Adding the literal only narrows items.get: its credentials stay.
      expect((await patch([get, exportAll])).status).toBe(200);
      await expectForwarded(() => gateway('GET', `/connectors/${id}/v1/items/item_1`, before.body.access_token), 200);
      const during = await exchange(id, { actions: ['items.get'], constraints: { item: ['item_1'] } }, entries(id).slice(0, 1));
      expect(during.status).toBe(200);
      expect((await patch([get])).status).toBe(200);
      const revoked = await gateway('GET', `/connectors/${id}/v1/items/export`, during.body.access_token);
      expect(revoked.status).toBe(401);
      expect(revoked.body.error_description).toBe('the access token has been revoked');
    });

    it.each(orders)('%s: the exchange refuses an items.get grant whose path value is items.export', async (id) => {
      const response = await exchange(id, { actions: ['items.get'], constraints: { item: ['item_1', 'export'] } });
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_authorization_details');
      expect(response.body.error_description).toMatch(/items\.export/);
    });
  });

  describe('an in constraint', () => {
    it('refuses an empty array (some upstreams read it as all) and passes a member', async () => {
      const token = await credential({ actions: ['tag'], constraints: { repos: ['allowed'] } });
      const before = upstream.received.length;
      const response = await gateway('POST', '/connectors/probe/v1/tags', token, '{"repos":[]}');
      expect(response.status).toBe(403);
      expect(response.body).toMatchObject({ error: 'insufficient_scope', rule: 'constraint:repos' });
      expect(await lastRefusal()).toMatchObject({ status: 403, rule: 'constraint:repos' });
      expect(upstream.received.length).toBe(before);
      await expectForwarded(() => gateway('POST', '/connectors/probe/v1/tags', token, '{"repos":["allowed"]}'), 200);
    });
  });

  describe('headers that say how the checked body is read', () => {
    /** Over node:http, which sends a Connection header as given (fetch refuses one naming other headers). */
    function rawHttp(method: string, path: string, headers: Record<string, string>, body = ''): Promise<TestResponse> {
      const url = new URL(services.gatewayUrl);
      return new Promise((resolve, reject) => {
        const req = httpRequest(
          { host: url.hostname, port: url.port, method, path, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } },
          (res) => {
            let text = '';
            res.on('data', (chunk) => (text += chunk));
            res.on('end', () => {
              let parsed: unknown = text;
              try {
                parsed = JSON.parse(text);
              } catch {
                // not JSON
              }
              resolve({ status: res.statusCode ?? 0, headers: new Headers(), body: parsed, text } as TestResponse);
            });
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    }
    // Read as a form (Rack and Rails read a POST without a type as one): amount=99999999, destination=acct_evil.
    const SMUGGLING = '{"destination":"acct_1","amount":100,"currency":"usd","memo":"&amount=99999999&destination=acct_evil&"}';

    it.each(['Content-Type', 'keep-alive, content-type', 'content_type', 'Content-Encoding'])(
      'refuses a Connection header naming %s (the upstream would get the checked JSON without its type)',
      async (listed) => {
        const token = await payout();
        await expectRefused(
          () =>
            rawHttp(
              'POST',
              '/connectors/probe/v1/payouts',
              { authorization: `Bearer ${token}`, 'content-type': 'application/json', connection: listed },
              SMUGGLING,
            ),
          400,
          'connection_header',
        );
        const items = await credential({ actions: ['items.create'], constraints: { project: 'allowed' } });
        await expectRefused(
          () =>
            rawHttp(
              'POST',
              '/connectors/probe/v1/items?project=allowed',
              { authorization: `Bearer ${items}`, 'content-type': 'application/json', connection: listed },
              '{"title":"&project=evil&"}',
            ),
          400,
          'connection_header',
        );
      },
    );

    it('still drops the other headers a Connection header names, and forwards the body with its type', async () => {
      const token = await payout();
      const received = await expectForwarded(
        () =>
          rawHttp(
            'POST',
            '/connectors/probe/v1/payouts',
            { authorization: `Bearer ${token}`, 'content-type': 'application/json', connection: 'keep-alive, x-hop', 'x-hop': '1' },
            PAYOUT,
          ),
        201,
      );
      expect(received.headers['content-type']).toBe('application/json');
      expect(received.headers['x-hop']).toBeUndefined();
    });

    it.each([
      ['content_type', 'application/x-www-form-urlencoded'],
      ['Content_Encoding', 'gzip'],
      ['mcp_session_id', 'another-task-session'],
    ])('refuses %s beside the dashed header the gateway read (Puma and Unicorn read _ as -)', async (name, value) => {
      const token = await payout();
      await expectRefused(
        () =>
          rawHttp('POST', '/connectors/probe/v1/payouts', { authorization: `Bearer ${token}`, [name]: value, 'content-type': 'application/json' }, SMUGGLING),
        400,
        'header_spelling',
      );
    });

    it.each([
      ['a list of types whose first is a form (PHP, Rack, Rails)', 'application/x-www-form-urlencoded, application/json', 'project=evil&title=x'],
      ['a form type and a word', 'application/x-www-form-urlencoded application/json', 'project=evil'],
      ['a form type whose parameter mentions /json (Laravel isJson)', 'application/x-www-form-urlencoded; x=/json', '{"project":"evil"}'],
      ['a multipart type whose boundary mentions /json (Laravel isJson)', 'multipart/form-data; boundary="/json"', '{"project":"evil"}'],
    ])('refuses the query-bound project sent again in %s', async (_name, type, body) => {
      const token = await credential({ actions: ['items.create'], constraints: { project: 'allowed' } });
      await expectRefused(
        () =>
          http(`${services.gatewayUrl}/connectors/probe/v1/items?project=allowed`, {
            method: 'POST',
            headers: { authorization: `Bearer ${token}`, 'content-type': type },
            body: new TextEncoder().encode(body),
          }),
        403,
        'field_in_two_places',
        'constraint:project',
      );
    });
  });

  describe('parameter names as PHP registers them', () => {
    it('refuses a repetition of the constrained query parameter behind a NUL (PHP reads repo%00x as repo)', async () => {
      const token = await lister();
      await expectRefused(() => gateway('GET', '/connectors/probe/v1/items?repo=allowed&repo%00=evil', token), 403, 'ambiguous_parameter', 'constraint:repo');
      await expectRefused(() => gateway('GET', '/connectors/probe/v1/items?repo=allowed&repo%00x=evil', token), 403, 'ambiguous_parameter', 'constraint:repo');
    });

    it('refuses a path-bound payout_id sent again as payout[id (PHP reads an unclosed [ as _)', async () => {
      const token = await credential({ actions: ['payouts.get'], constraints: { payout: 'po_1' } });
      await expectRefused(() => gateway('GET', '/connectors/probe/v1/payouts/po_1?payout%5Bid=po_2', token), 403, 'field_in_two_places', 'constraint:payout');
      await expectForwarded(() => gateway('GET', '/connectors/probe/v1/payouts/po_1?payout=x', token), 200);
    });

    it('refuses _method behind a NUL in the query', async () => {
      const token = await payout();
      await expectRefused(() => gateway('POST', '/connectors/probe/v1/payouts?_method%00=DELETE', token, PAYOUT), 400, 'method_override');
    });
  });

  describe('special address ranges', () => {
    it.each(['http://192.0.0.192/', 'http://192.0.0.8/', 'http://168.63.129.16/', 'http://[::ffff:0:a9fe:a9fe]/', 'http://[::ffff:0:7f00:1]/'])(
      'refuses a base_url at %s',
      async (baseUrl) => {
        const response = await sendJson(
          'POST',
          `${services.adminUrl}/v1/connectors`,
          { id: 'special', name: 'special', base_url: baseUrl, credential: { type: 'bearer', token: SECRET }, operations },
          services.adminToken,
        );
        expect(response.status).toBe(400);
        expect(response.body.fields).toEqual([{ field: 'base_url', message: expect.any(String) }]);
      },
    );
  });
});
