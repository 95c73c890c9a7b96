import { request as httpRequest } from 'node:http';
import { createClientKey, jwksOf } from '@writ/testing';
import { drainHttpApp } from '@writ/platform';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { AgentsService } from '../apps/admin/src/agents/agents.service';
import { http, sendJson, TestResponse } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

type Operation = {
  parameters?: Array<{ in: string; name: string; schema?: { type?: string; enum?: string[] } }>;
  responses: Record<string, unknown>;
  requestBody?: { content: Record<string, { schema?: { $ref?: string } }> };
};
type Paths = Record<string, Record<string, Operation>>;

/** Routes that are not API operations: the OpenAPI UI and document themselves, the console's static files. */
const META = /^\/(docs|console)(\/|-json|-yaml|$)/;

/**
 * The OpenAPI document walked against the live admin app: every registered route is documented
 * and every documented operation is a route; every documented parameter and body member is read
 * (never refused as unknown); and odd inputs fired at every operation answer only statuses that
 * operation documents, never a 500.
 */
describe('admin API: the OpenAPI document against the live app', () => {
  let services: TestServices;
  let paths: Paths;
  let schemas: Record<string, { properties?: Record<string, unknown>; required?: string[] }>;
  const auth = () => ({ authorization: `Bearer ${services.adminToken}` });
  /** Express's answer for a path no route matches (not a resource's 404). */
  const isRouteMiss = (response: TestResponse) => response.status === 404 && /^Cannot /.test(String(response.body?.error_description));
  const operations = () =>
    Object.entries(paths).flatMap(([path, byMethod]) => Object.entries(byMethod).map(([method, operation]) => ({ path, method, operation })));
  const send = (method: string, path: string, init: { type?: string; body?: string } = {}) =>
    http(`${services.adminUrl}${path}`, {
      method: method.toUpperCase(),
      headers: { ...auth(), ...(init.type ? { 'content-type': init.type } : {}) },
      body: init.body,
    });
  /** Each operation's status must be one it documents; a 400 must say what is at fault. */
  const expectDocumented = (method: string, path: string, label: string, operation: Operation, response: TestResponse) => {
    const documented = Object.keys(operation.responses);
    expect([method, path, label, response.status, documented.includes(String(response.status))]).toEqual([method, path, label, response.status, true]);
    if (response.status === 400)
      expect([method, path, label, response.body?.fields?.length > 0 || typeof response.body?.error_description === 'string']).toEqual([
        method,
        path,
        label,
        true,
      ]);
  };

  /**
   * What an open GET endpoint (a probe, the scrape) answers besides its own, each documented and
   * happening: a repeated single-valued header is a 400; a body (fetch sends none with a GET) is
   * refused before the handler, an admin token first (401), then the body (400, 413, 415), and an
   * empty JSON object is read and ignored.
   */
  const expectOpenEndpointRefusals = async (path: string, operation: Operation) => {
    const target = `${services.adminUrl}${path}`;
    const admin = { authorization: `Bearer ${services.adminToken}` };
    const json = { ...admin, 'content-type': 'application/json' };
    const answers: Array<[string, TestResponse, number, string]> = [
      ['repeated Authorization', await rawGet(target, { authorization: [admin.authorization, admin.authorization] }), 400, 'invalid_request'],
      ['body, no admin token', await rawGet(target, { 'content-type': 'application/json' }, '{}'), 401, 'unauthorized'],
      ['a member', await rawGet(target, json, '{"a":1}'), 400, 'invalid_request'],
      ['not JSON', await rawGet(target, json, '{"a":'), 400, 'invalid_request'],
      ['text', await rawGet(target, { ...admin, 'content-type': 'text/plain' }, 'x'), 415, 'invalid_request'],
      ['over 1 MiB', await rawGet(target, json, `"${'x'.repeat(1024 * 1024)}"`), 413, 'invalid_request'],
    ];
    for (const [label, response, status, error] of answers) {
      expectDocumented('get', path, label, operation, response);
      expect([path, label, response.status, response.body.error]).toEqual([path, label, status, error]);
      // In one of the shapes documented for that status: every member it requires, none it does not list.
      const schema = (operation.responses[String(status)] as { content: Record<string, { schema: { $ref?: string; oneOf?: Array<{ $ref: string }> } }> })
        .content['application/json'].schema;
      const shapes = (schema.oneOf ?? [schema]).map(({ $ref }) => schemas[String($ref).split('/').pop()!]);
      const members = Object.keys(response.body as object);
      const fits = shapes.some(
        (shape) => (shape.required ?? []).every((member) => members.includes(member)) && members.every((member) => member in (shape.properties ?? {})),
      );
      expect([path, label, members, fits]).toEqual([path, label, members, true]);
    }
    expect((await rawGet(target, { ...admin, 'content-type': 'application/json' }, '{"a":1}')).body.fields).toEqual([
      { field: 'body', message: 'this endpoint takes no body' },
    ]);
    expect((await rawGet(target, { 'content-type': 'application/json' }, '{}')).headers.get('www-authenticate')).toBe('Bearer realm="writ"');
    const empty = await rawGet(target, json, '{}');
    expectDocumented('get', path, 'empty body', operation, empty);
    expect([path, empty.status]).toEqual([path, 200]);
  };

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    const document = (await http(`${services.adminUrl}/docs-json`)).body;
    paths = document.paths;
    schemas = document.components.schemas;
  });
  afterAll(() => services.close());

  it('documents every registered route, and registers every documented one', () => {
    const app = services.apps[services.apps.length - 1];
    const instance = app.getHttpAdapter().getInstance() as { router: { stack: Array<{ route?: { path: string; methods: Record<string, boolean> } }> } };
    const registered = instance.router.stack
      .filter((layer) => layer.route && !META.test(layer.route.path))
      .flatMap((layer) => Object.keys(layer.route!.methods).map((method) => `${method.toUpperCase()} ${layer.route!.path.replace(/:(\w+)/g, '{$1}')}`));
    const documented = operations().map(({ path, method }) => `${method.toUpperCase()} ${path}`);
    expect(registered.length).toBeGreaterThan(40);
    expect([...registered].sort()).toEqual([...documented].sort());
  });

  it('answers every documented operation (no route miss) for an admin, with a documented status and shape', async () => {
    const schemas = (await http(`${services.adminUrl}/docs-json`)).body.components.schemas as Record<
      string,
      { properties?: Record<string, unknown>; required?: string[] }
    >;
    // Real resources for the ids that are simple to make; the others answer their resource's 404.
    const jwks = jwksOf(await createClientKey());
    expect((await sendJson('POST', `${services.adminUrl}/v1/agents`, { id: 'walk-agent', name: 'walk', jwks }, services.adminToken)).status).toBe(201);
    expect(
      (
        await sendJson(
          'POST',
          `${services.adminUrl}/v1/orchestrators`,
          { id: 'walk-orch', name: 'walk', jwks: jwksOf(await createClientKey()), allowed_agents: ['*'] },
          services.adminToken,
        )
      ).status,
    ).toBe(201);
    const connector = {
      id: 'walk',
      name: 'walk',
      base_url: 'https://api.walk.example',
      operations: [{ name: 'a.read', method: 'GET', path: '/a', risk: 'read' }],
    };
    expect((await sendJson('POST', `${services.adminUrl}/v1/connectors`, connector, services.adminToken)).status).toBe(201);
    const token = await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'walk', role: 'viewer' }, services.adminToken);
    const ids: Record<string, string> = {
      '/v1/agents/{id}': 'walk-agent',
      '/v1/orchestrators/{id}': 'walk-orch',
      '/v1/connectors/{id}': 'walk',
      '/v1/admin-tokens/{id}': token.body.id,
    };
    // Reads and changes before removals, so that each removal still finds its resource.
    const ordered = [...operations()].sort((a, b) => Number(a.method === 'delete') - Number(b.method === 'delete'));
    for (const { path, method, operation } of ordered) {
      const concrete = path.replace('{id}', encodeURIComponent(ids[path] ?? '00000000-0000-0000-0000-000000000000'));
      const response = operation.requestBody?.content['application/json']
        ? await send(method, concrete, { type: 'application/json', body: '{}' })
        : await send(method, concrete);
      expect([method, path, isRouteMiss(response)]).toEqual([method, path, false]);
      if (ids[path]) expect([method, path, response.status]).not.toEqual([method, path, 404]);
      if (response.status === 404)
        expect([method, path, response.body]).toEqual([method, path, { error: 'not_found', message: expect.stringMatching(/ not found$/) }]);
      expectDocumented(method, path, 'plain', operation, response);
      // A success answers the documented schema: no member it does not list, none it requires missing.
      const schemaRef = (operation.responses[String(response.status)] as { content?: Record<string, { schema?: { $ref?: string } }> } | undefined)?.content?.[
        'application/json'
      ]?.schema?.$ref;
      if (response.status < 300 && schemaRef) {
        const schema = schemas[schemaRef.split('/').pop()!];
        const members = Object.keys(response.body as object);
        expect([method, path, members.filter((member) => !(member in (schema.properties ?? {})))]).toEqual([method, path, []]);
        expect([method, path, (schema.required ?? []).filter((member) => !members.includes(member))]).toEqual([method, path, []]);
      }
    }
  });

  it('reads every documented query parameter and body member (none is refused as unknown)', async () => {
    const schemas = (await http(`${services.adminUrl}/docs-json`)).body.components.schemas as Record<string, { properties?: Record<string, unknown> }>;
    const unknownFields = (response: TestResponse) =>
      ((response.body?.fields ?? []) as Array<{ field: string; message: string }>).filter((f) => f.message === 'unknown field').map((f) => f.field);
    for (const { path, method, operation } of operations()) {
      const concrete = path.replace('{id}', '00000000-0000-0000-0000-000000000000');
      for (const parameter of (operation.parameters ?? []).filter((p) => p.in === 'query')) {
        const value = parameter.schema?.enum?.[0] ?? (parameter.schema?.type === 'integer' || parameter.schema?.type === 'number' ? '1' : 'x');
        const response = await send(method, `${concrete}?${parameter.name}=${encodeURIComponent(value)}`);
        expect([method, path, parameter.name, unknownFields(response)]).toEqual([method, path, parameter.name, []]);
      }
      const ref = operation.requestBody?.content['application/json']?.schema?.$ref;
      if (!ref || method === 'delete') continue;
      for (const member of Object.keys(schemas[ref.split('/').pop()!].properties ?? {})) {
        const response = await send(method, concrete, { type: 'application/json', body: JSON.stringify({ [member]: null }) });
        expect([method, path, member, unknownFields(response)]).toEqual([method, path, member, []]);
      }
    }
  });

  it('answers odd inputs at every operation with a documented status, never a 500', async () => {
    const ids = ['%00', '%ED%A0%80', '__proto__', 'constructor', 'a'.repeat(3000), '..%2F..', '%E2%80%AE', 'x%20y'];
    const queries = [
      'limit=-1',
      'limit=0',
      'limit=1e3',
      'limit=99999999999999999999',
      'limit=abc',
      'limit=1&limit=2',
      'cursor=AAAA',
      `cursor=${Buffer.from('{"k":{"$gt":""}}').toString('base64url')}`,
      `cursor=${'A'.repeat(3000)}`,
      'unknown_member=1',
      'status=__proto__',
      'since=99999-01-01T00:00:00Z',
      'agent_id[]=a',
      '__proto__[x]=1',
      'type=%ED%A0%80',
      'full=yes',
    ];
    const bodies: Array<[string, string, string]> = [
      ['array', 'application/json', '[1]'],
      ['string', 'application/json', '"x"'],
      ['null', 'application/json', 'null'],
      ['proto', 'application/json', '{"__proto__":{"x":1}}'],
      ['deep', 'application/json', `${'['.repeat(40)}${']'.repeat(40)}`],
      ['huge number', 'application/json', '{"name":1e400,"id":1e400,"reason":1e400,"value":1e400,"note":1e400}'],
      ['lone surrogate', 'application/json', '{"name":"\\ud800","id":"\\ud800","reason":"\\ud800","value":"\\ud800","note":"\\ud800"}'],
      [
        'wrong types',
        'application/json',
        '{"name":[],"id":{},"role":1,"status":true,"jwks":"x","operations":{},"credential":[],"reason":{},"value":[],"note":7,"data":[],"input":7}',
      ],
      ['text', 'text/plain', 'hello'],
      ['form', 'application/x-www-form-urlencoded', 'a=b'],
      ['truncated JSON', 'application/json', '{"a":'],
    ];
    for (const { path, method, operation } of operations()) {
      if (method === 'delete' && path === '/v1/policies/active') continue; // its plain call is above; nothing odd to send
      if (path === '/v1/keys/rotate') continue; // each call rotates: the plain call above is enough
      const fixed = path.replace('{id}', 'no-such-id');
      if (path.includes('{id}'))
        for (const id of ids) expectDocumented(method, path, `id ${id.slice(0, 20)}`, operation, await send(method, path.replace('{id}', id)));
      for (const query of queries) expectDocumented(method, path, `?${query.slice(0, 40)}`, operation, await send(method, `${fixed}?${query}`));
      if (method !== 'get')
        for (const [label, type, body] of bodies) expectDocumented(method, path, label, operation, await send(method, fixed, { type, body }));
    }
  });

  it('answers a Host it does not serve (WRIT_ALLOWED_HOSTS) with a documented status at every operation', async () => {
    // What a DNS-rebinding page's browser sends: the attacker's own name in `Host`. The refusal
    // comes from the platform, before any route, so only the document can say that every
    // operation may answer it.
    const withHost = (method: string, path: string, host: string) =>
      new Promise<TestResponse>((resolve, reject) => {
        const url = new URL(path, services.adminUrl);
        const req = httpRequest(
          { host: url.hostname, port: url.port, path: url.pathname, method: method.toUpperCase(), headers: { ...auth(), host }, agent: false },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (text += chunk));
            res.on('end', () => resolve({ status: res.statusCode!, headers: new Headers(), body: JSON.parse(text), text }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    for (const { path, method, operation } of operations()) {
      const fixed = path.replace('{id}', 'no-such-id');
      const response = await withHost(method, fixed, 'rebound.attacker.example');
      expectDocumented(method, path, 'foreign Host', operation, response);
      // Probes call by address: the health checks answer whatever `Host` says (docs/operations.md).
      if (path === '/health/live' || path === '/health/ready') expect([path, response.status]).toEqual([path, 200]);
      else expect([method, path, response.status, response.body.error]).toEqual([method, path, 421, 'misdirected_request']);
    }
  });

  it('documents every answer of GET /metrics, and each one happens', async () => {
    const scrape = paths['/metrics'].get;
    expect(Object.keys(scrape.responses).sort()).toEqual(['200', '400', '401', '413', '415', '421', '429', '503']);
    expect(Object.keys((scrape.responses['200'] as { content: Record<string, unknown> }).content)).toEqual(['text/plain']);
    // Open (no WRIT_METRICS_TOKEN): the Prometheus text, whatever the caller.
    const open = await http(`${services.adminUrl}/metrics`);
    expectDocumented('get', '/metrics', 'open', scrape, open);
    expect(open.status).toBe(200);
    expect(open.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(open.text).toContain('writ_http_requests_total');
    // A worker that does not hand over its series in time (WRIT_WORKERS): what the aggregation throws then.
    const render = jest.spyOn(services.runtime.metrics, 'render').mockRejectedValueOnce(new Error('cluster metrics timed out'));
    try {
      const unavailable = await http(`${services.adminUrl}/metrics`);
      expectDocumented('get', '/metrics', 'worker silent', scrape, unavailable);
      expect([unavailable.status, unavailable.headers.get('retry-after'), unavailable.body.error]).toEqual([503, '5', 'temporarily_unavailable']);
      expect(render).toHaveBeenCalled();
    } finally {
      render.mockRestore();
    }
    // With WRIT_METRICS_TOKEN: a missing, foreign or wrong token (an admin token included) is one 401.
    const token = 'metrics-token-'.padEnd(40, 'm');
    const guarded = await startSecondInstance(services, { admin: createAdminApp, env: { WRIT_METRICS_TOKEN: token } });
    try {
      for (const authorization of [undefined, `Bearer ${token}x`, `Basic ${token}`, `Bearer ${guarded.adminToken}`]) {
        const refused = await http(`${guarded.adminUrl}/metrics`, { headers: authorization ? { authorization } : {} });
        expectDocumented('get', '/metrics', `token ${authorization?.slice(0, 6)}`, scrape, refused);
        expect([refused.status, refused.headers.get('www-authenticate'), refused.body.error]).toEqual([401, 'Bearer realm="writ-metrics"', 'invalid_token']);
        expect(refused.text).not.toContain('writ_');
      }
      const scraped = await http(`${guarded.adminUrl}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expectDocumented('get', '/metrics', 'token', scrape, scraped);
      expect(scraped.text).toContain('writ_http_requests_total');
    } finally {
      await guarded.close();
    }
    await expectOpenEndpointRefusals('/metrics', scrape);
  });

  it('documents every answer of GET /health/live and /health/ready, and each one happens', async () => {
    const live = paths['/health/live'].get;
    const ready = paths['/health/ready'].get;
    for (const probe of [live, ready]) expect(Object.keys(probe.responses).sort()).toEqual(['200', '400', '401', '413', '415', '421', '429', '503']);
    for (const probe of [live, ready]) expect(Object.keys((probe.responses['503'] as { headers: object }).headers)).toEqual(['Retry-After']);
    const up = await http(`${services.adminUrl}/health/live`);
    expectDocumented('get', '/health/live', 'up', live, up);
    expect([up.status, up.body]).toEqual([200, { status: 'ok' }]);
    const readied = await http(`${services.adminUrl}/health/ready`);
    expectDocumented('get', '/health/ready', 'ready', ready, readied);
    expect([readied.status, readied.body.status, readied.body.checks.database]).toEqual([200, 'ok', { status: 'up' }]);
    // Liveness fails when the process cannot recover by itself (an embedded PostgreSQL given up on): restart it (Retry-After as every 503).
    const fatal = jest.spyOn(services.runtime, 'fatal').mockReturnValue('the embedded PostgreSQL exited and could not be restarted (5 attempts)');
    try {
      const down = await http(`${services.adminUrl}/health/live`);
      expectDocumented('get', '/health/live', 'fatal', live, down);
      expect([down.status, down.headers.get('retry-after'), down.body]).toEqual([
        503,
        '30',
        { status: 'down', reason: 'the embedded PostgreSQL exited and could not be restarted (5 attempts)' },
      ]);
    } finally {
      fatal.mockRestore();
    }
    // Readiness names its failing check (its answer is reused for a second: wait that out first).
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const keys = jest.spyOn(services.runtime.signingKeys, 'activeKid').mockImplementation(() => {
      throw new Error('no active signing key');
    });
    try {
      const unready = await http(`${services.adminUrl}/health/ready`);
      expectDocumented('get', '/health/ready', 'no key', ready, unready);
      expect([unready.status, unready.headers.get('retry-after'), unready.body.status, unready.body.failing]).toEqual([
        503,
        '5',
        'unavailable',
        ['signing_keys'],
      ]);
      expect(unready.body.checks.signing_keys).toEqual({ status: 'down', reason: 'no active signing key is loaded' });
    } finally {
      keys.mockRestore();
      // Its answer is reused for a second: let it pass before the next probe.
      await new Promise((resolve) => setTimeout(resolve, 1100));
    }
    // While draining (another instance, one request held in flight so that the drain lasts).
    const stopping = await startSecondInstance(services, { admin: createAdminApp });
    try {
      const app = stopping.apps[stopping.apps.length - 1];
      let release: () => void = () => undefined;
      let entered: () => void = () => undefined;
      const inFlight = new Promise<void>((resolve) => (entered = resolve));
      jest.spyOn(app.get(AgentsService), 'list').mockImplementationOnce(() => {
        entered();
        return new Promise((resolve) => (release = () => resolve({ items: [], next_cursor: null })));
      });
      const held = http(`${stopping.adminUrl}/v1/agents`, { headers: { authorization: `Bearer ${stopping.adminToken}` } });
      await inFlight;
      const drained = drainHttpApp(app, 10_000);
      const draining = await rawGet(`${stopping.adminUrl}/health/ready`, { connection: 'close' });
      expectDocumented('get', '/health/ready', 'draining', ready, draining);
      expect([draining.status, draining.headers.get('retry-after'), draining.body.failing]).toEqual([503, '1', ['draining']]);
      const stillLive = await rawGet(`${stopping.adminUrl}/health/live`, { connection: 'close' });
      expect(stillLive.status).toBe(200);
      release();
      expect((await held).status).toBe(200);
      expect(await drained).toBe(true);
    } finally {
      await stopping.close();
    }
    // A foreign Host: answered on the exact path; a path Express routes here all the same, spelled otherwise, is checked.
    for (const [path, probe] of [
      ['/health/live', live],
      ['/health/ready', ready],
    ] as const) {
      const exact = await rawGet(`${services.adminUrl}${path}`, { host: 'rebound.attacker.example' });
      expectDocumented('get', path, 'foreign Host', probe, exact);
      expect([path, exact.status]).toEqual([path, 200]);
      for (const spelling of [`${path}/`, path.toUpperCase()]) {
        // The same probe (not a route miss) with a Host this service answers for.
        const routed = await http(`${services.adminUrl}${spelling}`);
        expect([spelling, routed.status, routed.body.status]).toEqual([spelling, 200, 'ok']);
        const misdirected = await rawGet(`${services.adminUrl}${spelling}`, { host: 'rebound.attacker.example' });
        expectDocumented('get', path, `foreign Host, ${spelling}`, probe, misdirected);
        expect([spelling, misdirected.status, misdirected.body.error]).toEqual([spelling, 421, 'misdirected_request']);
        const malformed = await rawGet(`${services.adminUrl}${spelling}`, { host: 'user@admin.example.com' });
        expectDocumented('get', path, `malformed Host, ${spelling}`, probe, malformed);
        expect([spelling, malformed.status, malformed.body.error]).toEqual([spelling, 400, 'invalid_request']);
      }
      await expectOpenEndpointRefusals(path, probe);
    }
  });

  it('answers the open endpoints with a body and no admin token 429 once the address has failed too often, as documented', async () => {
    // Its own database: the address's failed authentications are counted across instances.
    const throttled = await startTestServices({ admin: createAdminApp, env: { WRIT_THROTTLE_SOURCE_FAILURES: '2', WRIT_THROTTLE_CLIENT_FAILURES: '2' } });
    try {
      const document = (await http(`${throttled.adminUrl}/docs-json`)).body.paths as Paths;
      const statuses: number[] = [];
      for (const path of ['/metrics', '/health/live', '/health/ready']) {
        for (let attempt = 0; attempt < 3; attempt += 1) {
          const response = await rawGet(`${throttled.adminUrl}${path}`, { 'content-type': 'application/json' }, '{}');
          expectDocumented('get', path, `attempt ${attempt}`, document[path].get, response);
          statuses.push(response.status);
          if (response.status === 429) expect(response.headers.get('retry-after')).toMatch(/^[0-9]+$/);
        }
        expect([path, statuses.at(-1)]).toEqual([path, 429]);
      }
      expect(statuses.slice(0, 2)).toEqual([401, 401]);
      // Without a body, the scrape is the metrics token's (unset here) and the probes are open: still served.
      for (const path of ['/metrics', '/health/live', '/health/ready'])
        expect([path, (await http(`${throttled.adminUrl}${path}`)).status]).toEqual([path, 200]);
    } finally {
      await throttled.close();
    }
  });

  it('gives each role exactly what docs/admin-api.md says, on every documented operation', async () => {
    // The least role of each change (docs/admin-api.md, Authentication and roles); every GET is a viewer's, but listing admin tokens.
    const least: Record<string, 'viewer' | 'operator' | 'admin'> = {
      'POST /v1/audit/hash': 'viewer',
      'GET /v1/admin-tokens': 'admin',
      'POST /v1/admin-tokens': 'admin',
      'DELETE /v1/admin-tokens/{id}': 'admin',
      'POST /v1/keys/rotate': 'admin',
      'POST /v1/identity-providers': 'admin',
      'DELETE /v1/identity-providers/{id}': 'admin',
      'PUT /v1/policies/active': 'admin',
      'DELETE /v1/policies/active': 'admin',
      'PUT /v1/policies/data': 'admin',
    };
    const roles = ['viewer', 'operator', 'admin'] as const;
    const tokens: Record<string, string> = { admin: services.adminToken };
    for (const role of ['viewer', 'operator'] as const) {
      tokens[role] = (await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: `matrix-${role}`, role }, services.adminToken)).body.token;
    }
    for (const { path, method, operation } of operations()) {
      if (!path.startsWith('/v1/')) continue;
      const type = operation.requestBody ? Object.keys(operation.requestBody.content)[0] : undefined;
      const key = `${method.toUpperCase()} ${path}`;
      const required = least[key] ?? (method === 'get' ? 'viewer' : 'operator');
      for (const role of roles) {
        if (role === 'admin') continue; // the admin may everything: its answers are walked above
        // An id that exists nowhere and a body that is refused: whatever the role may do, nothing changes.
        const response = await http(`${services.adminUrl}${path.replace('{id}', 'matrix-none')}`, {
          method: method.toUpperCase(),
          headers: { authorization: `Bearer ${tokens[role]}`, ...(type ? { 'content-type': type } : {}) },
          body: type === 'application/json' ? '{"matrix_unknown_member":1}' : type ? 'not a bundle' : undefined,
        });
        const allowed = roles.indexOf(role) >= roles.indexOf(required);
        expect([key, role, response.status === 403]).toEqual([key, role, !allowed]);
        if (!allowed)
          expect(response.body).toEqual({ error: 'forbidden', message: `this operation requires the ${required} role; this token has the ${role} role` });
      }
    }
    // The whole-chain verification is the admin's (rate-limited): a query member that raises the role.
    const full = await http(`${services.adminUrl}/v1/audit/verify?full=true`, { headers: { authorization: `Bearer ${tokens.operator}` } });
    expect(full.status).toBe(403);
  });

  it('documents Idempotency-Key, its 400 and its 422 on every create and on key rotation, and the answers keep to it', async () => {
    const creates = [
      'POST /v1/agents',
      'POST /v1/orchestrators',
      'POST /v1/connectors',
      'POST /v1/identity-providers',
      'POST /v1/admin-tokens',
      'POST /v1/connections/links',
      'POST /v1/keys/rotate',
    ];
    const keyed = operations().filter(({ operation }) => (operation.parameters ?? []).some((p) => p.in === 'header' && p.name === 'Idempotency-Key'));
    expect(keyed.map(({ path, method }) => `${method.toUpperCase()} ${path}`).sort()).toEqual([...creates].sort());
    for (const { path, method, operation } of keyed) {
      expect([method, path, Object.keys(operation.responses).filter((status) => ['201', '400', '422'].includes(status))]).toEqual([
        method,
        path,
        ['201', '400', '422'],
      ]);
      const refused = await http(`${services.adminUrl}${path}`, {
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json', 'idempotency-key': 'not a key' },
        body: '{}',
      });
      expectDocumented(method, path, 'malformed key', operation, refused);
      expect([path, refused.status, refused.body.fields]).toEqual([path, 400, [expect.objectContaining({ field: 'Idempotency-Key' })]]);
    }
    // A key reused for another request is a documented 422 naming the header.
    const agents = paths['/v1/agents'].post;
    const jwks = jwksOf(await createClientKey());
    const keyedPost = (body: unknown) =>
      http(`${services.adminUrl}/v1/agents`, {
        method: 'POST',
        headers: { ...auth(), 'content-type': 'application/json', 'idempotency-key': 'openapi-walk' },
        body: JSON.stringify(body),
      });
    expectDocumented('post', '/v1/agents', 'first', agents, await keyedPost({ name: 'openapi-key', jwks }));
    const reused = await keyedPost({ name: 'openapi-key-2', jwks });
    expectDocumented('post', '/v1/agents', 'reused key', agents, reused);
    expect([reused.status, reused.body.fields]).toEqual([422, [expect.objectContaining({ field: 'Idempotency-Key' })]]);
  });

  it('refuses a query member an endpoint does not read, naming it, rather than ignoring it', async () => {
    for (const path of [
      '/v1/keys?status=active',
      '/v1/identity-providers?status=active',
      '/v1/policies?version=x',
      '/v1/admin-tokens/self?id=x',
      '/v1/audit/verify?fulll=true',
    ]) {
      const response = await send('GET', path);
      const name = new URL(path, 'http://x').searchParams.keys().next().value;
      expect([path, response.status, response.body]).toEqual([
        path,
        400,
        { error: 'invalid_request', message: 'the query is invalid', fields: [{ field: name, message: 'unknown field' }] },
      ]);
    }
    const removal = await send('DELETE', '/v1/agents/walk-agent-2?cascade=false');
    expect(removal.status).toBe(400);
    expect(removal.body.fields).toEqual([{ field: 'cascade', message: 'unknown field' }]);
    // The parameters an endpoint does read still work, and a caller without a token is a 401 first.
    expect((await send('GET', '/v1/audit/verify?full=false')).status).toBe(200);
    expect((await http(`${services.adminUrl}/v1/keys?status=active`)).status).toBe(401);
  });
});

/**
 * A `GET` sent as given, which `fetch` refuses to: with a body, a repeated header (an array
 * value) or another `Host`. Its answer is read whole, as JSON when it is JSON.
 */
function rawGet(target: string, headers: Record<string, string | string[]>, body?: string): Promise<TestResponse> {
  return new Promise<TestResponse>((resolve, reject) => {
    const url = new URL(target);
    const req = httpRequest(
      {
        host: url.hostname,
        port: url.port,
        path: `${url.pathname}${url.search}`,
        method: 'GET',
        headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
        agent: false,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: kept as text
          }
          resolve({ status: res.statusCode!, headers: new Headers(res.headers as Record<string, string>), body: parsed, text });
        });
      },
    );
    // The server may answer and close before the whole body is written: the answer is what counts.
    req.on('error', (error) => (req.writableFinished ? undefined : reject(error)));
    req.end(body);
  });
}
