import { unsealCredential } from '@writ/connectors';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, seedWorld, World } from './support/grant-flow';
import { http, postForm, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { PAYMENTS_OPERATIONS } from './support/seed';
import { clientAuthFields } from '@writ/testing';
import { startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

/** Secrets that must never leave the admin API once written. */
const SECRETS = {
  bearer: 'sk_live_BEARER_never_shown_7f3a',
  header: 'hdr_HEADER_never_shown_91bc',
  rotated: 'sk_live_ROTATED_never_shown_c0de',
  client: 'cs_CLIENT_SECRET_never_shown_55aa',
};

describe('admin API: connectors', () => {
  let services: TestServices;
  let world: World;
  let operator: string;
  let viewer: string;
  /** Every response body the admin API gave in this suite, to look for secrets in. */
  const seen: string[] = [];

  const api = async <T = any>(method: string, path: string, body?: unknown, token: string = services.adminToken): Promise<TestResponse<T>> => {
    const response = await sendJson<T>(method, `${services.adminUrl}${path}`, body, token);
    seen.push(response.text);
    return response;
  };
  const payments = (overrides: Record<string, unknown> = {}) => ({
    id: 'stripe',
    name: 'Stripe',
    base_url: 'https://api.stripe.example',
    credential: { type: 'bearer', token: SECRETS.bearer },
    operations: PAYMENTS_OPERATIONS,
    ...overrides,
  });
  const refusal = async (body: unknown, method = 'POST', path = '/v1/connectors') => {
    const response = await api(method, path, body);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    return response.body.fields as Array<{ field: string; message: string }>;
  };

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    operator = (await api('POST', '/v1/admin-tokens', { name: 'operator', role: 'operator' })).body.token;
    viewer = (await api('POST', '/v1/admin-tokens', { name: 'viewer', role: 'viewer' })).body.token;
  });
  afterAll(() => services.close());

  it('registers the contract example, sealing the credential and showing only its fingerprint', async () => {
    const created = await api('POST', '/v1/connectors', payments(), operator);
    expect(created.status).toBe(201);
    expect(created.body).toEqual({
      id: 'stripe',
      kind: 'http',
      name: 'Stripe',
      base_url: 'https://api.stripe.example',
      operations: PAYMENTS_OPERATIONS,
      credential: { type: 'bearer', fingerprint: expect.stringMatching(/^hmac-sha256:[0-9a-f]{16}$/), set_at: expect.any(String) },
      created_at: expect.any(String),
      updated_at: expect.any(String),
    });
    const { rows } = await services.runtime.pool.query(
      'SELECT base_url, credential_sealed, credential_fingerprint, credential_type FROM connectors WHERE id = $1',
      ['stripe'],
    );
    expect(rows[0].credential_sealed.toString('latin1')).not.toContain(SECRETS.bearer);
    expect(unsealCredential(services.runtime.masterKey, 'stripe', rows[0].base_url, rows[0].credential_sealed)).toEqual({
      type: 'bearer',
      token: SECRETS.bearer,
    });
    expect(rows[0].credential_fingerprint).toBe(created.body.credential.fingerprint);
    expect((await api('GET', '/v1/connectors/stripe', undefined, viewer)).body).toEqual(created.body);
    const listed = await api('GET', '/v1/connectors', undefined, viewer);
    expect(listed.body.items.map((connector: { id: string }) => connector.id)).toEqual(['payments', 'stripe']);
    expect(listed.body.items[0].credential).toBeNull();
    const event = await services.runtime.pool.query(`SELECT data FROM audit_events WHERE type = 'admin.connector.created' AND connector_id = 'stripe'`);
    expect(event.rows[0].data).toEqual({
      name: 'Stripe',
      kind: 'http',
      base_url: 'https://api.stripe.example',
      operations: ['payouts.create', 'payouts.get', 'payouts.refund'],
      credential: { type: 'bearer', fingerprint: created.body.credential.fingerprint },
    });
  });

  it('registers a connector without a credential, and refuses a duplicate id with 409', async () => {
    const { credential: _credential, ...bare } = payments({ id: 'bare' });
    const created = await api('POST', '/v1/connectors', bare);
    expect(created.status).toBe(201);
    expect(created.body.credential).toBeNull();
    const again = await api('POST', '/v1/connectors', payments({ id: 'bare' }));
    expect(again.status).toBe(409);
    expect(again.body).toEqual({ error: 'conflict', message: 'a connector with the id bare already exists' });
    expect((await api('GET', '/v1/connectors/bare')).body.credential).toBeNull();
  });

  it('keeps connector changes to operators', async () => {
    const refused = await api('POST', '/v1/connectors', payments({ id: 'viewer-made' }), viewer);
    expect(refused.status).toBe(403);
    expect((await api('DELETE', '/v1/connectors/stripe', undefined, viewer)).status).toBe(403);
    expect((await api('GET', '/v1/connectors/viewer-made')).status).toBe(404);
  });

  const operation = (change: Record<string, unknown>) => [{ ...PAYMENTS_OPERATIONS[0], ...change }, ...PAYMENTS_OPERATIONS.slice(1)];
  const constraint = (index: number, name: string, binding: unknown) =>
    PAYMENTS_OPERATIONS.map((op, i) => (i === index ? { ...op, constraints: { ...op.constraints, [name]: binding } } : op));

  it.each([
    ['an id with capitals', { id: 'Stripe2' }, 'id'],
    ['a base_url with userinfo', { base_url: 'https://key:secret@api.example' }, 'base_url'],
    ['a base_url with a query', { base_url: 'https://api.example/v1?key=1' }, 'base_url'],
    ['a base_url with a fragment', { base_url: 'https://api.example/#x' }, 'base_url'],
    ['a base_url that is not http(s)', { base_url: 'javascript:alert(1)' }, 'base_url'],
    ['no operations', { operations: [] }, 'operations'],
    ['an unknown method', { operations: operation({ method: 'CONNECT' }) }, 'operations[0].method'],
    ['a traversal path', { operations: operation({ path: '/v1/../admin' }) }, 'operations[0].path'],
    ['an unknown risk', { operations: operation({ risk: 'dangerous' }) }, 'operations[0].risk'],
    ['an unknown operation member', { operations: operation({ timeout: 5 }) }, 'operations[0].timeout'],
    ['an unknown operator', { operations: constraint(0, 'amount_max', { in: 'body', field: 'amount', op: 'lt' }) }, 'operations[0].constraints.amount_max.op'],
    [
      'an unknown constraint member',
      { operations: constraint(0, 'currency', { in: 'body', field: 'currency', op: 'eq', default: 'usd' }) },
      'operations[0].constraints.currency.default',
    ],
    [
      'a field that is not a name or dotted path',
      { operations: constraint(0, 'currency', { in: 'body', field: 'currency[0]', op: 'eq' }) },
      'operations[0].constraints.currency.field',
    ],
    [
      'a path constraint on a non-parameter',
      { operations: constraint(1, 'payout', { in: 'path', field: 'id', op: 'eq' }) },
      'operations[1].constraints.payout.field',
    ],
    ['a body constraint on GET', { operations: constraint(1, 'amount', { in: 'body', field: 'amount', op: 'lte' }) }, 'operations[1].constraints.amount.in'],
    [
      'a query constraint on a name that is also a path parameter (field_in_two_places at every call)',
      { operations: constraint(1, 'payout_q', { in: 'query', field: 'Payout_Id', op: 'eq' }) },
      'operations[1].constraints.payout_q.in',
    ],
    [
      'a body constraint on a name that is also a path parameter',
      { operations: constraint(2, 'payout_b', { in: 'body', field: 'payout_id', op: 'eq' }) },
      'operations[2].constraints.payout_b.in',
    ],
    ['path parameters that differ only in case', { operations: operation({ path: '/v1/{Account}/{account}/payouts' }) }, 'operations[0].path'],
    [
      'two operations on one method and path',
      { operations: [...PAYMENTS_OPERATIONS, { name: 'payouts.create2', method: 'POST', path: '/v1/payouts', risk: 'write' }] },
      'operations[3].path',
    ],
    [
      'duplicate operation names',
      { operations: [...PAYMENTS_OPERATIONS, { name: 'payouts.get', method: 'GET', path: '/v2/payouts', risk: 'read' }] },
      'operations[3].name',
    ],
    ['an unknown credential type', { credential: { type: 'basic', token: SECRETS.bearer } }, 'credential.type'],
    ['a bearer credential without token', { credential: { type: 'bearer' } }, 'credential.token'],
    ['a header credential for Authorization', { credential: { type: 'header', name: 'Authorization', value: SECRETS.header } }, 'credential.name'],
    ['a header credential for a hop-by-hop header', { credential: { type: 'header', name: 'Connection', value: SECRETS.header } }, 'credential.name'],
    ['a header credential with an invalid name', { credential: { type: 'header', name: 'X-Key:', value: SECRETS.header } }, 'credential.name'],
    ['a header value with a line break', { credential: { type: 'header', name: 'X-Key', value: `${SECRETS.header}\r\nX-Evil: 1` } }, 'credential.value'],
    [
      'a token_url that is not http(s)',
      { credential: { type: 'oauth2_client_credentials', token_url: 'gopher://auth', client_id: 'c', client_secret: SECRETS.client } },
      'credential.token_url',
    ],
    ['an unknown credential member', { credential: { type: 'bearer', token: SECRETS.bearer, expires: 1 } }, 'credential.expires'],
    ['an unknown top-level field', { owner: 'me' }, 'owner'],
  ])('refuses %s, naming the field', async (_name, overrides, field) => {
    const fields = await refusal(payments({ id: 'refused', ...overrides }));
    expect([...new Set(fields.map((entry) => entry.field))]).toEqual([field]);
    expect((await api('GET', '/v1/connectors/refused')).status).toBe(404);
  });

  describe('templates that overlap on one method', () => {
    const specific = { name: 'items.export', method: 'GET', path: '/v1/items/export', risk: 'write' };
    const general = { name: 'items.get', method: 'GET', path: '/v1/items/{id}', risk: 'read' };
    const left = { name: 'a.left', method: 'GET', path: '/v1/{x}/c', risk: 'read' };
    const right = { name: 'a.right', method: 'GET', path: '/v1/b/{y}', risk: 'write' };

    it('accepts a literal beside a parameter in either order (the most specific runs)', async () => {
      for (const [id, operations] of [
        ['overlap-literal-first', [specific, general]],
        ['overlap-param-first', [general, specific]],
      ] as const) {
        expect((await api('POST', '/v1/connectors', payments({ id, operations }))).status).toBe(201);
        // Later tests page through the list.
        expect((await api('DELETE', `/v1/connectors/${id}`)).status).toBe(204);
      }
    });

    it('refuses two with neither more specific, naming the path, on create and on update', async () => {
      const created = await refusal(payments({ id: 'overlap-refused', operations: [left, right] }));
      expect(created).toEqual([
        { field: 'operations[1].path', message: 'overlaps operations[0].path (/v1/{x}/c) with neither more specific: GET /v1/b/c would match both' },
      ]);
      expect((await api('GET', '/v1/connectors/overlap-refused')).status).toBe(404);
      expect((await api('POST', '/v1/connectors', payments({ id: 'overlap-patched', operations: [general] }))).status).toBe(201);
      const patched = await refusal({ operations: [right, left] }, 'PATCH', '/v1/connectors/overlap-patched');
      expect(patched).toEqual([
        { field: 'operations[1].path', message: 'overlaps operations[0].path (/v1/b/{y}) with neither more specific: GET /v1/b/c would match both' },
      ]);
      expect((await api('GET', '/v1/connectors/overlap-patched')).body.operations).toMatchObject([general]);
      expect((await api('DELETE', '/v1/connectors/overlap-patched')).status).toBe(204);
    });
  });

  it('refuses a connector body that is not JSON, and a missing body', async () => {
    const notJson = await fetch(`${services.adminUrl}/v1/connectors`, {
      method: 'POST',
      headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/json' },
      body: '{"id":',
    });
    expect(notJson.status).toBe(400);
    const fields = await refusal(undefined);
    expect(fields.map((entry) => entry.field)).toEqual(expect.arrayContaining(['id', 'name', 'base_url', 'operations']));
  });

  it('changes a connector and rotates its credential, recording only fingerprints', async () => {
    const before = (await api('GET', '/v1/connectors/stripe')).body;
    // The credential is bound to its destination: a new base_url needs it again.
    const moved = await api('PATCH', '/v1/connectors/stripe', { name: 'Stripe (EU)', base_url: 'https://eu.stripe.example/api' }, operator);
    expect(moved.status).toBe(400);
    expect(moved.body.fields).toEqual([{ field: 'credential', message: expect.stringMatching(/^changing base_url requires the credential again/) }]);
    expect((await api('GET', '/v1/connectors/stripe')).body).toEqual(before);
    const renamed = await api(
      'PATCH',
      '/v1/connectors/stripe',
      {
        name: 'Stripe (EU)',
        base_url: 'https://eu.stripe.example/api',
        credential: { type: 'bearer', token: SECRETS.bearer },
      },
      operator,
    );
    expect(renamed.status).toBe(200);
    expect(renamed.body).toMatchObject({
      name: 'Stripe (EU)',
      base_url: 'https://eu.stripe.example/api',
      credential: { type: 'bearer', fingerprint: before.credential.fingerprint },
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    const rotated = await api('PATCH', '/v1/connectors/stripe', { credential: { type: 'bearer', token: SECRETS.rotated } }, operator);
    expect(rotated.status).toBe(200);
    expect(rotated.body.credential.type).toBe('bearer');
    expect(rotated.body.credential.fingerprint).not.toBe(before.credential.fingerprint);
    expect(Date.parse(rotated.body.credential.set_at)).toBeGreaterThan(Date.parse(before.credential.set_at));
    const { rows } = await services.runtime.pool.query('SELECT base_url, credential_sealed FROM connectors WHERE id = $1', ['stripe']);
    expect(unsealCredential(services.runtime.masterKey, 'stripe', rows[0].base_url, rows[0].credential_sealed)).toEqual({
      type: 'bearer',
      token: SECRETS.rotated,
    });
    const header = await api('PATCH', '/v1/connectors/stripe', { credential: { type: 'header', name: 'X-Api-Key', value: SECRETS.header } });
    expect(header.body.credential.type).toBe('header');
    const events = await services.runtime.pool.query(`SELECT type, data FROM audit_events WHERE connector_id = 'stripe' AND type LIKE 'admin.%' ORDER BY seq`);
    expect(events.rows.map((row) => row.type)).toEqual([
      'admin.connector.created',
      'admin.connector.updated',
      'admin.connector.credential_rotated',
      'admin.connector.credential_rotated',
      'admin.connector.credential_rotated',
    ]);
    expect(events.rows[1].data).toEqual({ changed: ['name', 'base_url'], base_url: 'https://eu.stripe.example/api' });
    expect(events.rows[3].data).toEqual({
      type: 'bearer',
      fingerprint: rotated.body.credential.fingerprint,
      previous_fingerprint: before.credential.fingerprint,
    });
  });

  it('validates changes like definitions, and cannot change the id', async () => {
    const renamed = await refusal({ id: 'other', name: 'x' }, 'PATCH', '/v1/connectors/stripe');
    expect(renamed).toEqual([{ field: 'id', message: 'unknown field' }]);
    const fields = await refusal(
      { operations: constraint(0, 'amount_max', { in: 'query', field: 'amount', op: 'between' }) },
      'PATCH',
      '/v1/connectors/stripe',
    );
    expect(fields).toEqual([{ field: 'operations[0].constraints.amount_max.op', message: 'must be one of eq, lte, gte, in' }]);
    const inTwoPlaces = await refusal(
      { operations: constraint(1, 'payout_q', { in: 'query', field: 'payout_id', op: 'eq' }) },
      'PATCH',
      '/v1/connectors/stripe',
    );
    expect(inTwoPlaces).toEqual([{ field: 'operations[1].constraints.payout_q.in', message: expect.stringContaining('also the path parameter {payout_id}') }]);
    expect((await api('GET', '/v1/connectors/stripe')).body.name).toBe('Stripe (EU)');
    const secretInError = await refusal(
      { credential: { type: 'oauth2_client_credentials', token_url: 'https://auth.example/token', client_id: 'x', client_secret: `${SECRETS.client}\u0000` } },
      'PATCH',
      '/v1/connectors/stripe',
    );
    expect(secretInError.map((entry) => entry.field)).toEqual(['credential.client_secret']);
    expect((await api('PATCH', '/v1/connectors/ghost', { name: 'x' })).status).toBe(404);
  });

  it('accepts an oauth2_client_credentials credential', async () => {
    const created = await api(
      'POST',
      '/v1/connectors',
      payments({
        id: 'ledger',
        credential: {
          type: 'oauth2_client_credentials',
          token_url: 'https://auth.ledger.example/oauth/token',
          client_id: 'writ',
          client_secret: SECRETS.client,
          scope: 'ledger:write',
        },
      }),
    );
    expect(created.status).toBe(201);
    expect(created.body.credential).toEqual({ type: 'oauth2_client_credentials', fingerprint: expect.any(String), set_at: expect.any(String) });
  });

  it('deletes a connector after revoking every credential issued for it', async () => {
    const created = await api('POST', '/v1/connectors', payments({ id: 'doomed' }));
    expect(created.status).toBe(201);
    const allowed = [{ type: 'connector', connector: 'doomed', actions: ['payouts.get'] }];
    const task = await createTask(services, world.orchestrator, { allowed });
    const issued = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, allowed));
    expect(issued.status).toBe(200);
    const introspect = async () =>
      (
        await postForm(`${services.issuer}/oauth2/introspect`, {
          token: issued.body.access_token,
          ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, services.issuer)),
        })
      ).body;
    expect(await introspect()).toMatchObject({ active: true });
    const deleted = await api('DELETE', '/v1/connectors/doomed', undefined, operator);
    expect(deleted.status).toBe(204);
    expect(deleted.text).toBe('');
    expect(await introspect()).toEqual({ active: false });
    expect((await api('GET', '/v1/connectors/doomed')).status).toBe(404);
    expect((await api('DELETE', '/v1/connectors/doomed')).status).toBe(404);
    const { rows } = await services.runtime.pool.query('SELECT revoked_reason FROM access_tokens WHERE connector_id = $1', ['doomed']);
    expect(rows).toEqual([{ revoked_reason: 'connector deleted' }]);
    const events = await services.runtime.pool.query(
      `SELECT type, actor_type, data FROM audit_events WHERE connector_id = 'doomed' AND type IN ('admin.connector.deleted', 'token.revoked') ORDER BY seq`,
    );
    expect(events.rows).toEqual([
      { type: 'admin.connector.deleted', actor_type: 'admin', data: { tokens_revoked: 1, connections_removed: 0 } },
      { type: 'token.revoked', actor_type: 'admin', data: { reason: 'connector deleted', jtis: [expect.any(String)], count: 1 } },
    ]);
  });

  it('pages the connector list', async () => {
    const ids: string[] = [];
    let cursor: string | null = null;
    do {
      const page: TestResponse = await api('GET', `/v1/connectors?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.body.items.length).toBeLessThanOrEqual(1);
      ids.push(...page.body.items.map((connector: { id: string }) => connector.id));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(ids).toEqual(['bare', 'ledger', 'payments', 'stripe']);
  });

  it('guards changes with If-Match: of two admins editing one version at once, one wins and the other gets 412', async () => {
    const conditional = (method: string, path: string, ifMatch: string, body?: unknown) =>
      http(`${services.adminUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${operator}`, 'if-match': ifMatch, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
    const created = await api('POST', '/v1/connectors', payments({ id: 'race', name: 'Race' }));
    expect(created.status).toBe(201);
    const read = await api('GET', '/v1/connectors/race');
    const tag = read.headers.get('etag')!;
    expect(tag).toMatch(/^"[A-Za-z0-9_-]{32}"$/);
    expect(created.headers.get('etag')).toBe(tag);
    const { rows: before } = await services.runtime.pool.query(
      `SELECT count(*)::int AS n FROM audit_events WHERE type = 'admin.connector.updated' AND connector_id = 'race'`,
    );

    // Both read the same version and change different things: without the check the second silently undoes the first.
    const [first, second] = await Promise.all([
      conditional('PATCH', '/v1/connectors/race', tag, { name: 'Race A' }),
      conditional('PATCH', '/v1/connectors/race', tag, { operations: PAYMENTS_OPERATIONS.slice(0, 1) }),
    ]);
    expect([first.status, second.status].sort()).toEqual([200, 412]);
    const [won, lost] = first.status === 200 ? [first, second] : [second, first];
    expect(lost.body).toEqual({ error: 'precondition_failed', message: expect.stringContaining('If-Match does not match') });
    expect(won.headers.get('etag')).not.toBe(tag);
    const after = await api('GET', '/v1/connectors/race');
    expect(after.headers.get('etag')).toBe(won.headers.get('etag'));
    expect(after.body).toEqual(won.body);
    const { rows: events } = await services.runtime.pool.query(
      `SELECT count(*)::int AS n FROM audit_events WHERE type = 'admin.connector.updated' AND connector_id = 'race'`,
    );
    expect(events[0].n).toBe(before[0].n + 1);

    // A rotation is a new version too; a weak or stale tag never matches; a malformed one is a 400 naming the header.
    const rotated = await conditional('PATCH', '/v1/connectors/race', after.headers.get('etag')!, { credential: { type: 'bearer', token: SECRETS.rotated } });
    expect(rotated.status).toBe(200);
    expect(rotated.headers.get('etag')).not.toBe(after.headers.get('etag'));
    expect((await conditional('PATCH', '/v1/connectors/race', after.headers.get('etag')!, { name: 'stale' })).status).toBe(412);
    expect((await conditional('PATCH', '/v1/connectors/race', `W/${rotated.headers.get('etag')}`, { name: 'weak' })).status).toBe(412);
    const malformed = await conditional('PATCH', '/v1/connectors/race', 'not-a-tag', { name: 'x' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.fields).toEqual([{ field: 'If-Match', message: expect.any(String) }]);
    expect((await api('GET', '/v1/connectors/race')).body.name).not.toMatch(/stale|weak|^x$/);

    // DELETE: a stale tag leaves the connector in place; the current one (in a list) or * removes it.
    expect((await conditional('DELETE', '/v1/connectors/race', tag)).status).toBe(412);
    expect((await api('GET', '/v1/connectors/race')).status).toBe(200);
    expect((await conditional('DELETE', '/v1/connectors/race', `"other", ${rotated.headers.get('etag')}`)).status).toBe(204);
    expect((await api('GET', '/v1/connectors/race')).status).toBe(404);
    expect((await conditional('DELETE', '/v1/connectors/race', '*')).status).toBe(404);
  });

  it('never quotes a credential sent as a number that cannot be kept exactly, nor a hashed value', async () => {
    // A numeric API key or client secret pasted without quotes: the refusal names the member, never the (near-exact) number.
    const token = '98765432109876543210';
    const secret = '12345678901234567891234';
    const post = (text: string, path = '/v1/connectors', method = 'POST') =>
      http(`${services.adminUrl}${path}`, { method, headers: { authorization: `Bearer ${operator}`, 'content-type': 'application/json' }, body: text });
    const definition = (credential: string) => JSON.stringify(payments({ id: 'numeric' })).replace(/"credential":\{[^}]*\}/, `"credential":${credential}`);
    const refusals = [
      await post(definition(`{"type":"bearer","token":${token}}`)),
      await post(`{"credential":{"type":"bearer","token":${token}}}`, '/v1/connectors/stripe', 'PATCH'),
      await post(definition(`{"type":"oauth2_client_credentials","token_url":"https://auth.example.com/t","client_id":"c","client_secret":${secret}}`)),
      await post(`{"value":${secret}}`, '/v1/audit/hash'),
    ];
    for (const refused of refusals) {
      expect(refused.status).toBe(400);
      expect(refused.body.fields).toEqual([
        {
          field: expect.stringMatching(/^(credential\.(token|client_secret)|value)$/),
          message: 'is a number that cannot be kept exactly (send a secret as a string)',
        },
      ]);
      for (const digits of [token.slice(0, 12), secret.slice(0, 12), '1.23456789']) expect(refused.text).not.toContain(digits);
    }
    // Elsewhere the number it reads as is still shown: it says what went wrong.
    const amount = await post(
      `{"name":"x","operations":[{"name":"a.b","method":"GET","path":"/a","risk":"read","constraints":{"q":{"in":"query","field":"q","op":"lte","max":9007199254740993}}}]}`,
      '/v1/connectors/stripe',
      'PATCH',
    );
    expect(amount.body.fields).toEqual([{ field: 'operations[0].constraints.q.max', message: expect.stringContaining('it would read as 9007199254740992') }]);
  });

  it('never shows a secret in any admin response or any audit event', async () => {
    // Read everything once more, as a viewer would.
    for (const path of ['/v1/connectors?limit=200', '/v1/connectors/stripe', '/v1/connectors/ledger', '/v1/audit?limit=1000', '/v1/audit/export']) {
      const response = await api('GET', path);
      expect(response.status).toBe(200);
    }
    const everything = seen.join('\n');
    expect(everything.length).toBeGreaterThan(1000);
    const { rows } = await services.runtime.pool.query('SELECT data::text AS data FROM audit_events');
    const events = rows.map((row) => row.data).join('\n');
    expect(events).toContain('"fingerprint": "hmac-sha256:');
    for (const secret of Object.values(SECRETS)) {
      expect(everything).not.toContain(secret);
      expect(events).not.toContain(secret);
    }
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
