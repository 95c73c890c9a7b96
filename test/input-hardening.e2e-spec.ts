import { clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_ALLOWED, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { PAYMENTS_OPERATIONS, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const SECRET = 'sk_live_hardening_91ab';
/** 3000 levels of nesting: under 8 KiB, far past the depth limit (32). */
const DEEP = '['.repeat(3000) + ']'.repeat(3000);
const cursorOf = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * Hostile encodings against every service: members the framework would drop silently
 * (`__proto__`), duplicate keys, lone surrogates, NUL, deep nesting, huge numbers, and route
 * parameters, queries and cursors that used to reach PostgreSQL casts unchecked.
 */
describe('input hardening', () => {
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

  /** Sends a body byte for byte (JSON.stringify would collapse duplicates and re-escape). */
  const raw = (method: string, url: string, body: string, token?: string) =>
    http(url, {
      method,
      headers: { ...(body ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body || undefined,
    });
  const admin = (method: string, path: string, body?: string) => raw(method, `${services.adminUrl}${path}`, body ?? '', services.adminToken);
  const fieldsOf = (response: TestResponse) => [...new Set((response.body.fields as Array<{ field: string }>).map((entry) => entry.field))];
  const count = async (sql: string, values: unknown[] = []) => Number((await services.runtime.pool.query<{ n: string }>(sql, values)).rows[0].n);
  const taskBody = (allowed: string, extra = '') => `{"agent_id":"agent-1","purpose":"pay INV-42","ttl_seconds":600,"allowed":${allowed}${extra}}`;

  describe('nothing the caller sent is dropped silently', () => {
    it.each(['__proto__', 'constructor', 'prototype'])('refuses a task whose constraints hide behind %s, naming the field, and stores nothing', async (key) => {
      const before = await count('SELECT count(*) AS n FROM tasks');
      const response = await raw(
        'POST',
        `${services.issuer}/v1/tasks`,
        taskBody(`[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"${key}":{"amount_max":1}}}]`),
        tasks,
      );
      expect(response.status).toBe(400);
      expect(response.body).toEqual({
        error: 'invalid_request',
        message: 'the request body is invalid',
        fields: [{ field: `allowed[0].constraints.${key}`, message: 'is a forbidden member name' }],
      });
      expect(await count('SELECT count(*) AS n FROM tasks')).toBe(before);
    });

    it('refuses forbidden keys anywhere in a task, and duplicate keys', async () => {
      const allowed = JSON.stringify(PAYOUT_ALLOWED);
      const metadata = await raw('POST', `${services.issuer}/v1/tasks`, taskBody(allowed, ',"metadata":{"a":{"constructor":{"x":1}}}'), tasks);
      expect(fieldsOf(metadata)).toEqual(['metadata.a.constructor']);
      const duplicate = await raw(
        'POST',
        `${services.issuer}/v1/tasks`,
        taskBody('[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"amount_max":1,"amount_max":99999999}}]'),
        tasks,
      );
      expect(duplicate.status).toBe(400);
      expect(duplicate.body.fields).toEqual([{ field: 'allowed[0].constraints.amount_max', message: 'appears more than once in one object' }]);
      const topLevel = await raw('POST', `${services.issuer}/v1/tasks`, taskBody(allowed, ',"ttl_seconds":60'), tasks);
      expect(fieldsOf(topLevel)).toEqual(['ttl_seconds']);
    });

    it('refuses __proto__ in an admin connector definition, on create and on change', async () => {
      const operations = JSON.stringify(PAYMENTS_OPERATIONS).replace(
        '"constraints":{',
        '"constraints":{"__proto__":{"in":"body","field":"amount","op":"lte"},',
      );
      const created = await admin('POST', '/v1/connectors', `{"id":"pay2","name":"Pay 2","base_url":"https://pay.example","operations":${operations}}`);
      expect(created.status).toBe(400);
      expect(fieldsOf(created)).toEqual([expect.stringMatching(/^operations\[\d+\]\.constraints\.__proto__$/)]);
      const changed = await admin('PATCH', '/v1/connectors/payments', `{"operations":${operations}}`);
      expect(changed.status).toBe(400);
      expect(fieldsOf(changed)).toEqual([expect.stringMatching(/^operations\[\d+\]\.constraints\.__proto__$/)]);
      const root = await admin('PATCH', '/v1/agents/agent-1', '{"__proto__":{"status":"suspended"}}');
      expect(root.status).toBe(400);
      expect(fieldsOf(root)).toEqual(['__proto__']);
    });

    // class-transformer, which turns admin and Tasks API bodies into DTOs, skips any member whose
    // name an object already answers with a function (`toString`, `valueOf`, `hasOwnProperty`…),
    // at any depth: a connector's constraint named `valueOf` was stored as no constraint at all.
    it('refuses members named after Object.prototype (valueOf, toString…) in admin and Tasks API bodies, storing nothing', async () => {
      const operations = JSON.stringify(PAYMENTS_OPERATIONS).replace('"constraints":{', '"constraints":{"valueOf":{"in":"body","field":"amount","op":"lte"},');
      const created = await admin('POST', '/v1/connectors', `{"id":"pay3","name":"Pay 3","base_url":"https://pay.example","operations":${operations}}`);
      expect(created.status).toBe(400);
      expect(created.body.fields).toEqual([
        { field: expect.stringMatching(/^operations\[\d+\]\.constraints\.valueOf$/), message: 'is a forbidden member name' },
      ]);
      expect(await count('SELECT count(*) AS n FROM connectors WHERE id = $1', ['pay3'])).toBe(0);
      const tokens = await count('SELECT count(*) AS n FROM admin_tokens');
      const token = await admin('POST', '/v1/admin-tokens', '{"name":"ci","role":"viewer","toString":1,"hasOwnProperty":"x"}');
      expect(token.status).toBe(400);
      expect(token.body.fields).toEqual([
        { field: 'toString', message: 'is a forbidden member name' },
        { field: 'hasOwnProperty', message: 'is a forbidden member name' },
      ]);
      expect(await count('SELECT count(*) AS n FROM admin_tokens')).toBe(tokens);
      const task = await raw('POST', `${services.issuer}/v1/tasks`, taskBody(JSON.stringify(PAYOUT_ALLOWED), ',"metadata":{"a":{"isPrototypeOf":1}}'), tasks);
      expect(task.status).toBe(400);
      expect(task.body.fields).toEqual([{ field: 'metadata.a.isPrototypeOf', message: 'is a forbidden member name' }]);
    });

    it.each(['__proto__', 'constructor', 'toString', 'valueOf'])('refuses a query member named %s as unknown, never ignored', async (name) => {
      for (const path of ['/v1/keys', '/v1/agents', '/v1/tasks', '/v1/audit', '/v1/admin-tokens']) {
        const response = await admin('GET', `${path}?${name}=1`);
        expect({ path, status: response.status, body: response.body }).toEqual({
          path,
          status: 400,
          body: { error: 'invalid_request', message: 'the query is invalid', fields: [{ field: name, message: 'unknown field' }] },
        });
      }
    });

    it('refuses __proto__ and duplicate keys in authorization_details at the token endpoint, naming the member', async () => {
      const task = await createTask(services, world.orchestrator);
      const hidden = '[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"__proto__":{"amount_max":1}}}]';
      const refused = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, hidden));
      expect(refused.status).toBe(400);
      expect(refused.body).toEqual({
        error: 'invalid_authorization_details',
        error_description: 'authorization_details[0].constraints.__proto__ is a forbidden member name',
      });
      const twice =
        '[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"destination":"acct_1","destination":"acct_2","amount_max":1,"currency":"usd"}}]';
      const duplicate = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, twice));
      expect(duplicate.body.error_description).toBe('authorization_details[0].constraints.destination appears more than once in one object');
    });

    it('refuses a gateway body hiding a member behind __proto__, without forwarding it', async () => {
      const task = await createTask(services, world.orchestrator);
      const credential = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
      const before = upstream.received.length;
      const response = await raw(
        'POST',
        `${services.gatewayUrl}/connectors/payments/v1/payouts`,
        '{"destination":"acct_1","amount":42000,"currency":"usd","__proto__":{"amount":99999999}}',
        credential.body.access_token,
      );
      expect(response.status).toBe(400);
      expect(response.body.error_description).toBe('body.__proto__ is a forbidden member name');
      expect(upstream.received.length).toBe(before);
    });
  });

  describe('hostile encodings are a 400 naming the field, and refusals are still audited', () => {
    it('refuses a lone surrogate in a task purpose', async () => {
      const response = await raw(
        'POST',
        `${services.issuer}/v1/tasks`,
        `{"agent_id":"agent-1","purpose":"pay \\ud800","ttl_seconds":600,"allowed":${JSON.stringify(PAYOUT_ALLOWED)}}`,
        tasks,
      );
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'purpose', message: 'contains a lone UTF-16 surrogate (not valid Unicode)' }]);
    });

    it('refuses a lone surrogate or NUL in an admin reason', async () => {
      const task = await createTask(services, world.orchestrator);
      for (const reason of ['"\\udc00 fraud"', '"a\\u0000b"']) {
        const response = await admin('POST', `/v1/tasks/${task.task_id}/revoke`, `{"reason":${reason}}`);
        expect(response.status).toBe(400);
        expect(fieldsOf(response)).toEqual(['reason']);
      }
      expect((await sendJson('GET', `${services.adminUrl}/v1/tasks/${task.task_id}`, undefined, services.adminToken)).body.status).toBe('active');
    });

    it('refuses a lone surrogate in authorization_details and audits the refusal', async () => {
      const task = await createTask(services, world.orchestrator);
      const details =
        '[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"destination":"\\ud800","amount_max":1,"currency":"usd"}}]';
      const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, details));
      expect(response.status).toBe(400);
      expect(response.body.error_description).toBe('authorization_details[0].constraints.destination contains a lone UTF-16 surrogate (not valid Unicode)');
      const events = await services.runtime.pool.query<{ data: { error_description: string } }>(
        `SELECT data FROM audit_events WHERE type = 'token.refused' AND actor_id = 'agent-1' ORDER BY seq DESC LIMIT 1`,
      );
      expect(events.rows[0].data.error_description).toMatch(/destination contains a lone UTF-16 surrogate/);
    });

    it('refuses a lone surrogate in a gateway body and audits the refusal', async () => {
      const task = await createTask(services, world.orchestrator);
      const credential = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
      const jti = JSON.parse(Buffer.from(credential.body.access_token.split('.')[1], 'base64url').toString()).jti as string;
      const response = await raw(
        'POST',
        `${services.gatewayUrl}/connectors/payments/v1/payouts`,
        '{"destination":"acct_1\\ud800","amount":42000,"currency":"usd"}',
        credential.body.access_token,
      );
      expect(response.status).toBe(400);
      expect(response.body.error_description).toBe('body.destination contains a lone UTF-16 surrogate (not valid Unicode)');
      expect(await count(`SELECT count(*) AS n FROM audit_events WHERE type = 'gateway.call' AND outcome = 'denied' AND data->>'jti' = $1`, [jti])).toBe(1);
    });

    it('refuses nesting thousands of levels deep everywhere JSON is read (no stack overflow)', async () => {
      const task = await createTask(services, world.orchestrator);
      expect(DEEP.length).toBeLessThan(8 * 1024);
      const asTask = await raw('POST', `${services.issuer}/v1/tasks`, taskBody(DEEP), tasks);
      expect(asTask.status).toBe(400);
      expect(asTask.body.fields[0]).toEqual({ field: 'allowed' + '[0]'.repeat(31), message: 'nests deeper than 32 levels' });
      const asMetadata = await raw('POST', `${services.issuer}/v1/tasks`, taskBody(JSON.stringify(PAYOUT_ALLOWED), `,"metadata":{"a":${DEEP}}`), tasks);
      expect(asMetadata.status).toBe(400);
      const asConnector = await admin('POST', '/v1/connectors', `{"id":"deep","name":"Deep","base_url":"https://x.example","operations":${DEEP}}`);
      expect(asConnector.status).toBe(400);
      const asDetails = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, DEEP));
      expect(asDetails.status).toBe(400);
      expect(asDetails.body.error_description).toMatch(/nests deeper than 32 levels/);
      const credential = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST));
      const asGatewayBody = await raw(
        'POST',
        `${services.gatewayUrl}/connectors/payments/v1/payouts`,
        `{"destination":"acct_1","amount":42000,"currency":"usd","x":${DEEP}}`,
        credential.body.access_token,
      );
      expect(asGatewayBody.status).toBe(400);
    });

    it.each([
      ['1e400', 'ttl_seconds'],
      ['18446744073709551616', 'ttl_seconds'],
      ['-1e400', 'ttl_seconds'],
    ])('refuses ttl_seconds %s', async (value, field) => {
      const response = await raw(
        'POST',
        `${services.issuer}/v1/tasks`,
        `{"agent_id":"agent-1","purpose":"p","allowed":${JSON.stringify(PAYOUT_ALLOWED)},"ttl_seconds":${value}}`,
        tasks,
      );
      expect(response.status).toBe(400);
      expect(fieldsOf(response)).toEqual([field]);
    });

    it.each(['1e400', '18446744073709551616', '0x10', '1e1', ' 5', '-1', '5.5'])('refuses the list limit %p', async (limit) => {
      for (const path of ['/v1/agents', '/v1/audit', '/v1/admin-tokens', '/v1/tasks', '/v1/approvals']) {
        const response = await admin('GET', `${path}?limit=${encodeURIComponent(limit)}`);
        expect([path, response.status]).toEqual([path, 400]);
        expect(fieldsOf(response)).toEqual(['limit']);
      }
    });

    it.each([
      ['/v1/admin-tokens', { t: 'x 1', i: '00000000-0000-0000-0000-000000000000' }],
      ['/v1/admin-tokens', { t: '2025-01-01T00:00:00.000Z', i: '-'.repeat(36) }],
      // Dates Date.parse reads (rolled over, or year 0) that PostgreSQL refuses: never sent to it.
      ['/v1/admin-tokens', { t: '2025-02-30T00:00:00.000Z', i: '00000000-0000-0000-0000-000000000000' }],
      ['/v1/admin-tokens', { t: '0000-01-01T00:00:00.000Z', i: '00000000-0000-0000-0000-000000000000' }],
      ['/v1/approvals', { at: 'x 1', id: '00000000-0000-0000-0000-000000000000' }],
      ['/v1/approvals', { at: '2025-01-01T00:00:00.000Z', id: '-'.repeat(36) }],
      ['/v1/tasks', { c: 'x 1', i: '00000000-0000-0000-0000-000000000000' }],
      ['/v1/agents', { k: 'a\u0000' }],
      ['/v1/connectors', { k: '\ud800' }],
      ['/v1/audit', { s: -1 }],
      ['/v1/audit', { s: '1' }],
    ])('refuses a forged cursor on %s (%j)', async (path, cursor) => {
      const response = await admin('GET', `${path}?cursor=${cursorOf(cursor)}`);
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'cursor', message: 'is not a cursor of this list' }]);
    });

    it('answers 404 or 400 for ids that used to reach uuid casts, and names a NUL parameter', async () => {
      const dashes = '-'.repeat(36);
      expect((await admin('GET', `/v1/approvals/${dashes}`)).status).toBe(404);
      expect((await admin('POST', `/v1/approvals/${dashes}/approve`, '{}')).status).toBe(404);
      expect((await admin('GET', `/v1/tasks/${dashes}`)).status).toBe(404);
      expect((await admin('DELETE', `/v1/admin-tokens/${dashes}`)).status).toBe(404);
      expect((await raw('GET', `${services.issuer}/v1/tasks/${dashes}`, '', tasks)).status).toBe(404);
      const nul = await admin('GET', '/v1/agents/x%00');
      expect(nul.status).toBe(400);
      expect(nul.body.fields).toEqual([{ field: 'id', message: 'must not contain control characters' }]);
      const query = await admin('GET', '/v1/tasks?agent_id=a%00');
      expect(query.status).toBe(400);
      expect(query.body.fields).toEqual([{ field: 'agent_id', message: 'must not contain control characters' }]);
    });
  });

  describe('no route answers 500 to hostile values', () => {
    const HOSTILE_SEGMENTS = [
      '%00',
      'x%00y',
      '%ED%A0%80',
      '-'.repeat(36),
      'a'.repeat(10 * 1024),
      '%2E%2E',
      '..%2F..',
      '%25',
      '00000000-0000-0000-0000-00000000000g',
      '%C0%AF',
      '%E2%80%AE',
    ];
    const HOSTILE_QUERIES = ['%00', '%ED%A0%80', 'a'.repeat(10 * 1024), '1e400', '18446744073709551616', '-'.repeat(36), cursorOf({ t: 'x 1' }), '..'];
    const HOSTILE_BODIES = [DEEP, '{"a":"\\ud800"}', '{"a":1,"a":2}', '{"__proto__":{}}', '{"a":"\\u0000"}', '{"a":1e400}', '"x"', '[1,'];

    it('fires hostile path parameters, queries and bodies at every admin route', async () => {
      const document = (await http(`${services.adminUrl}/docs-json`)).body as {
        paths: Record<string, Record<string, { parameters?: Array<{ name: string; in: string }> }>>;
      };
      const failures: string[] = [];
      const fire = async (method: string, path: string, body?: string) => {
        const response = await admin(method.toUpperCase(), path, body);
        if (response.status >= 500)
          failures.push(`${method.toUpperCase()} ${path.slice(0, 120)} ${body?.slice(0, 40) ?? ''} -> ${response.status} ${response.text.slice(0, 200)}`);
      };
      let routes = 0;
      for (const [template, operations] of Object.entries(document.paths)) {
        for (const [method, operation] of Object.entries(operations)) {
          routes += 1;
          const queries = (operation.parameters ?? []).filter((parameter) => parameter.in === 'query').map((parameter) => parameter.name);
          const paths = template.includes('{') ? HOSTILE_SEGMENTS.map((segment) => template.replace(/\{[^}]+\}/g, segment)) : [template];
          for (const path of paths) await fire(method, path);
          for (const name of queries) for (const value of HOSTILE_QUERIES) await fire(method, `${paths[0]}?${name}=${value}`);
          if (method === 'post' || method === 'patch' || method === 'put') {
            for (const body of HOSTILE_BODIES) await fire(method, paths[0], body);
          }
        }
      }
      expect(routes).toBeGreaterThan(25);
      expect(failures).toEqual([]);
    });

    it('fires hostile values at the Tasks API and the gateway', async () => {
      const failures: string[] = [];
      for (const segment of HOSTILE_SEGMENTS) {
        for (const [method, path] of [
          ['GET', `/v1/tasks/${segment}`],
          ['POST', `/v1/tasks/${segment}/complete`],
          ['POST', `/v1/tasks/${segment}/fail`],
        ]) {
          const response = await raw(method, `${services.issuer}${path}`, '', tasks);
          if (response.status >= 500) failures.push(`${method} ${path.slice(0, 80)} -> ${response.status}`);
        }
        for (const path of [
          `/connectors/${segment}/v1/payouts`,
          `/connectors/payments/v1/payouts/${segment}`,
          `/connectors/payments/${segment}?x=${segment}`,
        ]) {
          const response = await raw('GET', `${services.gatewayUrl}${path}`, '', 'not-a-token');
          if (response.status >= 500) failures.push(`GET ${path.slice(0, 80)} -> ${response.status}`);
        }
      }
      // Claimed client ids come from unverified assertions: NUL, lone surrogates, 10 KB.
      const key = world.agent.key;
      for (const clientId of ['x\u0000', '\ud800', 'a'.repeat(10 * 1024), '-'.repeat(36)]) {
        for (const endpoint of ['token', 'introspect', 'revoke']) {
          const response = await http(`${services.issuer}/oauth2/${endpoint}`, {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({
              grant_type: 'client_credentials',
              scope: 'tasks',
              token: 'x',
              ...(await clientAuthFields(clientId, key, services.issuer)),
            }).toString(),
          });
          if (response.status !== 401 || response.body.error !== 'invalid_client')
            failures.push(`${endpoint} client ${clientId.slice(0, 8)} -> ${response.status} ${response.text.slice(0, 120)}`);
        }
      }
      for (const body of HOSTILE_BODIES) {
        const response = await raw('POST', `${services.issuer}/v1/tasks`, body, tasks);
        if (response.status !== 400) failures.push(`POST /v1/tasks ${body.slice(0, 30)} -> ${response.status}`);
      }
      expect(failures).toEqual([]);
    });
  });

  describe('credentials are never cacheable', () => {
    it('sends no-store (and Pragma: no-cache) with a task token and an admin token', async () => {
      const task = await sendJson(
        'POST',
        `${services.issuer}/v1/tasks`,
        { agent_id: 'agent-1', purpose: 'p', allowed: PAYOUT_ALLOWED, ttl_seconds: 60 },
        tasks,
      );
      expect(task.status).toBe(201);
      expect(task.headers.get('cache-control')).toBe('no-store');
      expect(task.headers.get('pragma')).toBe('no-cache');
      const token = await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'cache-test', role: 'viewer' }, services.adminToken);
      expect(token.status).toBe(201);
      expect(token.headers.get('cache-control')).toBe('no-store');
      expect(token.headers.get('pragma')).toBe('no-cache');
    });

    it('defaults every other response to no-store, and keeps discovery and JWKS cacheable', async () => {
      for (const url of [`${services.adminUrl}/v1/agents`, `${services.adminUrl}/v1/connectors/payments`, `${services.issuer}/health/live`]) {
        const response = await http(url, { headers: { authorization: `Bearer ${services.adminToken}` } });
        expect([url, response.headers.get('cache-control')]).toEqual([url, 'no-store']);
      }
      const task = await createTask(services, world.orchestrator);
      const shown = await sendJson('GET', `${services.issuer}/v1/tasks/${task.task_id}`, undefined, tasks);
      expect(shown.headers.get('cache-control')).toBe('no-store');
      expect((await http(`${services.issuer}/.well-known/oauth-authorization-server`)).headers.get('cache-control')).toMatch(/^public/);
    });
  });
});
