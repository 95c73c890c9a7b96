import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_ALLOWED, seedWorld, tasksToken, World } from './support/grant-flow';
import { http, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/**
 * A refused body lists every problem it has, each naming its member, in document order and at
 * most 50 (docs/admin-api.md, docs/tasks.md): a client that fixes the first field must not find
 * the next one only on its next try. A body that is not JSON at all is one problem naming `body`;
 * the token endpoint answers one RFC 6749 error whose description lists every problem of
 * `authorization_details`.
 */
describe('every problem of a refused request is named', () => {
  let services: TestServices;
  let world: World;
  let tasks: string;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    tasks = await tasksToken(services, world.orchestrator);
  });
  afterAll(() => services.close());

  /** Sends a body byte for byte (JSON.stringify would collapse duplicates and re-escape). */
  const raw = (url: string, body: string, token: string) =>
    http(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body });
  const declare = (body: string) => raw(`${services.issuer}/v1/tasks`, body, tasks);
  const fieldsOf = (response: TestResponse) => (response.body.fields as Array<{ field: string }>).map((entry) => entry.field);
  const taskCount = async () => Number((await services.runtime.pool.query<{ n: string }>('SELECT count(*) AS n FROM tasks')).rows[0].n);
  const LIMITED = (amount: string) =>
    `[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"destination":"acct_1","amount_max":50000,"currency":"usd"},"limits":{"sum":{"amount_max":${amount}}}}]`;

  describe('Tasks API (POST /v1/tasks)', () => {
    it('names both a lone surrogate in purpose and 1e400 in a limit, in document order, and stores nothing', async () => {
      const before = await taskCount();
      const response = await declare(`{"agent_id":"agent-1","purpose":"pay \\ud800","ttl_seconds":600,"allowed":${LIMITED('1e400')}}`);
      expect(response.status).toBe(400);
      expect(response.body).toEqual({
        error: 'invalid_request',
        message: 'the request body is invalid',
        fields: [
          { field: 'purpose', message: 'contains a lone UTF-16 surrogate (not valid Unicode)' },
          { field: 'allowed[0].limits.sum.amount_max', message: 'is a number out of range' },
        ],
      });
      expect(await taskCount()).toBe(before);
    });

    it('names a duplicate key, a __proto__ key, NUL, an inexact number and a lone surrogate in a key, all at once', async () => {
      const response = await declare(
        '{"agent_id":"agent-1","agent_id":"agent-2","purpose":"a\\u0000b","ttl_seconds":9007199254740993,' +
          `"metadata":{"__proto__":{"admin":true},"\\udc00":1},"allowed":${JSON.stringify(PAYOUT_ALLOWED)}}`,
      );
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([
        { field: 'agent_id', message: 'appears more than once in one object' },
        { field: 'purpose', message: 'contains a NUL character' },
        { field: 'ttl_seconds', message: 'is a number that cannot be kept exactly (it would read as 9007199254740992)' },
        { field: 'metadata.__proto__', message: 'is a forbidden member name' },
        { field: 'metadata.?', message: 'name contains a lone UTF-16 surrogate (not valid Unicode)' },
      ]);
    });

    it('names every bad member of every allowed entry, and not only the first', async () => {
      const response = await declare(
        JSON.stringify({
          agent_id: 'agent-1',
          purpose: 'pay',
          ttl_seconds: 600,
          allowed: [
            { type: 'connector', connector: 'payments', actions: [] },
            { type: 'connector', connector: 'no such id!', actions: ['payouts.create', 'payouts.create'], constraints: { amount_max: {} } },
            { type: 'bank' },
          ],
        }),
      );
      expect(response.status).toBe(400);
      expect(fieldsOf(response)).toEqual([
        'allowed[0].actions',
        'allowed[1].connector',
        'allowed[1].actions[1]',
        'allowed[1].constraints.amount_max',
        'allowed[2].type',
      ]);
      expect(response.body.fields[0]).toEqual({ field: 'allowed[0].actions', message: 'allowed[0].actions must be a non-empty array' });
    });

    it('names every bad limit and constraint of entries that parse', async () => {
      const response = await declare(
        JSON.stringify({
          agent_id: 'agent-1',
          purpose: 'pay',
          ttl_seconds: 600,
          allowed: [
            { ...PAYOUT_ALLOWED[0], limits: { calls: 0, sum: { amount_max: -1 } } },
            { ...PAYOUT_ALLOWED[1], actions: ['payouts.get', 'payouts.nope'], limits: { calls: 1.5, 'evil\r\nkey': 1 } },
          ],
        }),
      );
      expect(response.status).toBe(400);
      expect(fieldsOf(response)).toEqual([
        'allowed[0].limits.calls',
        'allowed[0].limits.sum.amount_max',
        'allowed[1].actions[1]',
        'allowed[1].limits.evil??key',
        'allowed[1].limits.calls',
      ]);
    });

    it('answers at most 50 problems, each path printable and short, whatever the body', async () => {
      const members = Array.from({ length: 200 }, (_, index) => `"k${index}${'\u202e'.repeat(100)}":"\\ud800"`).join(',');
      const response = await declare(
        `{"agent_id":"agent-1","purpose":"pay","ttl_seconds":600,"metadata":{${members}},"allowed":${JSON.stringify(PAYOUT_ALLOWED)}}`,
      );
      expect(response.status).toBe(400);
      expect(response.body.fields).toHaveLength(50);
      expect(response.body.fields[0].field).toBe(`metadata.k0${'?'.repeat(62)}...`);
      for (const { field } of response.body.fields as Array<{ field: string }>) expect(field).toMatch(/^[\x20-\x7e]{1,80}$/);
      expect(response.text.length).toBeLessThan(10_000);
    });

    it('names the body alone when it is not JSON, whatever came before the syntax error', async () => {
      const response = await declare('{"agent_id":"agent-1","purpose":"\\ud800","ttl_seconds":1e400,');
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([{ field: 'body', message: expect.stringMatching(/^is not valid JSON/) }]);
    });

    it('ends at nesting deeper than the limit, after the problems before it', async () => {
      const response = await declare(`{"purpose":"\\ud800","metadata":${'['.repeat(3000)}${']'.repeat(3000)}}`);
      expect(response.status).toBe(400);
      expect(fieldsOf(response)).toEqual(['purpose', expect.stringMatching(/^metadata(\[0\])+$/)]);
    });
  });

  describe('admin API', () => {
    const admin = (path: string, body: string) => raw(`${services.adminUrl}${path}`, body, services.adminToken);

    it('names every member problem of an agent body', async () => {
      const response = await admin('/v1/agents', '{"id":"agent-9","id":"agent-10","name":"\\udfff","jwks":{"keys":[{"kty":"EC","x":1e999}]}}');
      expect(response.status).toBe(400);
      expect(response.body.fields).toEqual([
        { field: 'id', message: 'appears more than once in one object' },
        { field: 'name', message: 'contains a lone UTF-16 surrogate (not valid Unicode)' },
        { field: 'jwks.keys[0].x', message: 'is a number out of range' },
      ]);
    });

    it('names every problem of a policy dry run request', async () => {
      const task = await createTask(services, world.orchestrator);
      const response = await sendJson(
        'POST',
        `${services.adminUrl}/v1/policies/evaluate`,
        { task_id: task.task_id, authorization_details: [{ type: 'connector', connector: 'payments', actions: [], locations: 'x' }] },
        services.adminToken,
      );
      expect(response.status).toBe(400);
      expect(fieldsOf(response)).toEqual(['authorization_details[0].actions', 'authorization_details[0].locations']);
    });
  });

  describe('token endpoint (RFC 6749 error, one description)', () => {
    it('lists every problem of authorization_details in error_description, joined by "; "', async () => {
      const task = await createTask(services, world.orchestrator);
      const details =
        '[{"type":"connector","type":"connector","connector":"payments","actions":[],"constraints":{"amount_max":"\\ud800"}},' +
        '{"type":"connector","connector":"payments","actions":["payouts.create"],"extra":1}]';
      const response = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, details));
      expect(response.status).toBe(400);
      // The JSON problems alone: the text is read before its structure is checked.
      expect(response.body).toEqual({
        error: 'invalid_authorization_details',
        error_description:
          'authorization_details[0].type appears more than once in one object; ' +
          'authorization_details[0].constraints.amount_max contains a lone UTF-16 surrogate (not valid Unicode)',
      });
      const structural = await tokenRequest(
        services.issuer,
        world.agent,
        exchangeFields(task.task_token, [
          { type: 'connector', connector: 'payments', actions: [] },
          { type: 'connector', connector: 'payments', actions: ['payouts.create'], extra: 1 },
        ]),
      );
      expect(structural.status).toBe(400);
      expect(structural.body).toEqual({
        error: 'invalid_authorization_details',
        error_description: 'authorization_details[0].actions must be a non-empty array; authorization_details[1]."extra" is not supported',
      });
    });
  });
});
