import { createHash } from 'node:crypto';
import { createClientKey, jwksOf } from '@writ/testing';
import { canonicalJsonText } from '@writ/audit';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { seedCodehost } from './support/connect-flow';
import { http, TestResponse } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

/**
 * `Idempotency-Key` on the admin API's creates: a retried `POST` (a timeout, a proxy's retry)
 * creates nothing more. Before, every create without a client-chosen id (an agent, an
 * orchestrator, an admin token, a connect link) made a second resource on each retry.
 */
describe('admin API: creates under an Idempotency-Key', () => {
  let services: TestServices;
  let second: TestServices;
  let jwks: unknown;

  const post = (path: string, body: unknown, key?: string, token = services.adminToken, base = services.adminUrl): Promise<TestResponse> =>
    http(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, ...(key !== undefined ? { 'idempotency-key': key } : {}) },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  const count = async (sql: string, values: unknown[] = []): Promise<number> => (await services.runtime.pool.query(sql, values)).rows[0].n;
  const events = (type: string, id: string) =>
    count(`SELECT count(*)::int AS n FROM audit_events WHERE type = $1 AND (agent_id = $2 OR data->>'id' = $2 OR data->>'issuer' = $2)`, [type, id]);
  const agentsNamed = (name: string) => count('SELECT count(*)::int AS n FROM agents WHERE name = $1', [name]);
  const newAdminToken = async (role: string): Promise<string> => {
    const created = await post('/v1/admin-tokens', { name: `caller-${role}-${Math.random()}`, role });
    expect(created.status).toBe(201);
    return created.body.token;
  };

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    second = await startSecondInstance(services, { admin: createAdminApp });
    jwks = jwksOf(await createClientKey());
  });
  afterAll(async () => {
    await second?.close();
    await services?.close();
  });

  it('answers a retried create with the first answer, creating one agent and one audit event', async () => {
    const body = { name: 'retried', description: 'made once', jwks };
    const first = await post('/v1/agents', body, 'agent-key-1');
    expect(first.status).toBe(201);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    const again = await post('/v1/agents', body, 'agent-key-1');
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.body).toEqual(first.body);
    // The same body in another member order and spacing (RFC 8785) is the same request.
    const reordered = `{ "jwks": ${JSON.stringify(jwks)},  "description": "made once", "name": "retried" }`;
    const third = await post('/v1/agents', reordered, 'agent-key-1');
    expect([third.status, third.body.id]).toEqual([201, first.body.id]);
    expect(await agentsNamed('retried')).toBe(1);
    // One admin change, one event: a replay changes nothing and records nothing.
    expect(await events('admin.agent.created', first.body.id)).toBe(1);
  });

  it('refuses the key with another body or on another endpoint (422 naming Idempotency-Key), creating nothing', async () => {
    const first = await post('/v1/agents', { name: 'keyed', jwks }, 'agent-key-2');
    expect(first.status).toBe(201);
    const other = await post('/v1/agents', { name: 'keyed-other', jwks }, 'agent-key-2');
    expect(other.status).toBe(422);
    expect(other.body).toEqual({ error: 'invalid_request', message: expect.any(String), fields: [{ field: 'Idempotency-Key', message: expect.any(String) }] });
    const elsewhere = await post('/v1/orchestrators', { name: 'keyed', jwks }, 'agent-key-2');
    expect(elsewhere.status).toBe(422);
    expect(await agentsNamed('keyed-other')).toBe(0);
    expect(await count(`SELECT count(*)::int AS n FROM orchestrators WHERE name = 'keyed'`)).toBe(0);
    // Without a key, each create is a new agent (as before).
    for (let i = 0; i < 2; i++) expect((await post('/v1/agents', { name: 'unkeyed', jwks })).status).toBe(201);
    expect(await agentsNamed('unkeyed')).toBe(2);
  });

  it('keeps keys per admin token: another token with the same key creates its own', async () => {
    const operator = await newAdminToken('operator');
    const mine = await post('/v1/agents', { name: 'per-caller', jwks }, 'shared-key');
    const theirs = await post('/v1/agents', { name: 'per-caller', jwks }, 'shared-key', operator);
    expect([mine.status, theirs.status]).toEqual([201, 201]);
    expect(theirs.headers.get('idempotent-replayed')).toBeNull();
    expect(theirs.body.id).not.toBe(mine.body.id);
    expect(await agentsNamed('per-caller')).toBe(2);
  });

  it('creates exactly one agent for identical requests sent at once to two instances', async () => {
    const body = { name: 'raced', jwks };
    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, index) => post('/v1/agents', body, 'raced-key', services.adminToken, index % 2 ? second.adminUrl : services.adminUrl)),
    );
    expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 201));
    expect(new Set(answers.map((answer) => answer.body.id)).size).toBe(1);
    expect(answers.filter((answer) => answer.headers.get('idempotent-replayed') === null)).toHaveLength(1);
    expect(await agentsNamed('raced')).toBe(1);
    expect(await events('admin.agent.created', answers[0].body.id)).toBe(1);
  });

  it('gives a key back when its create fails: a taken id is a 409, and the key then serves another request', async () => {
    expect((await post('/v1/agents', { id: 'taken-id', name: 'taken', jwks })).status).toBe(201);
    const taken = await post('/v1/agents', { id: 'taken-id', name: 'taken', jwks }, 'given-back');
    expect(taken.status).toBe(409);
    const other = await post('/v1/agents', { id: 'free-id', name: 'free', jwks }, 'given-back');
    expect([other.status, other.body.id]).toEqual([201, 'free-id']);
  });

  it('lets a key expire after 24 hours: the same key then creates anew', async () => {
    const body = { name: 'expiring', jwks };
    const first = await post('/v1/agents', body, 'expiring-key');
    await services.runtime.pool.query(`UPDATE admin_idempotency_keys SET expires_at = now() - interval '1 second' WHERE idempotency_key = 'expiring-key'`);
    const later = await post('/v1/agents', body, 'expiring-key');
    expect(later.status).toBe(201);
    expect(later.headers.get('idempotent-replayed')).toBeNull();
    expect(later.body.id).not.toBe(first.body.id);
    expect(await count(`SELECT count(*)::int AS n FROM admin_idempotency_keys WHERE idempotency_key = 'expiring-key'`)).toBe(1);
  });

  it('removes expired keys of any token on a keyed create, so a token that stops creating leaves none behind', async () => {
    const operator = await newAdminToken('operator');
    expect((await post('/v1/agents', { name: 'left-behind', jwks }, 'left-behind-key', operator)).status).toBe(201);
    await services.runtime.pool.query(`UPDATE admin_idempotency_keys SET expires_at = now() - interval '1 second' WHERE idempotency_key = 'left-behind-key'`);
    expect((await post('/v1/agents', { name: 'sweeper', jwks }, 'sweeper-key')).status).toBe(201);
    expect(await count(`SELECT count(*)::int AS n FROM admin_idempotency_keys WHERE idempotency_key = 'left-behind-key'`)).toBe(0);
    expect(await count(`SELECT count(*)::int AS n FROM admin_idempotency_keys WHERE expires_at <= now()`)).toBe(0);
  });

  it('refuses a malformed or repeated Idempotency-Key (400 naming it), creating nothing', async () => {
    for (const key of ['has space', 'x'.repeat(256), 'é', '']) {
      const refused = await post('/v1/agents', { name: 'badkey', jwks }, key);
      expect([key, refused.status, refused.body.fields]).toEqual([key, 400, [expect.objectContaining({ field: 'Idempotency-Key' })]]);
    }
    const headers = new Headers({ 'content-type': 'application/json', authorization: `Bearer ${services.adminToken}` });
    headers.append('idempotency-key', 'a');
    headers.append('idempotency-key', 'b');
    const repeated = await http(`${services.adminUrl}/v1/agents`, { method: 'POST', headers, body: JSON.stringify({ name: 'badkey', jwks }) });
    expect(repeated.status).toBe(400);
    expect(await agentsNamed('badkey')).toBe(0);
  });

  it('replays an admin token creation without the token, which is never kept', async () => {
    const body = { name: 'replayed-token', role: 'viewer' };
    const first = await post('/v1/admin-tokens', body, 'token-key');
    expect(first.status).toBe(201);
    expect(first.body.token).toMatch(/^writ_admin_/);
    const again = await post('/v1/admin-tokens', body, 'token-key');
    expect(again.status).toBe(201);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    const { token, ...withoutToken } = first.body;
    expect(again.body).toEqual(withoutToken);
    expect(await count(`SELECT count(*)::int AS n FROM admin_tokens WHERE name = 'replayed-token'`)).toBe(1);
    const stored = await services.runtime.pool.query(`SELECT row_to_json(k)::text AS text FROM admin_idempotency_keys k WHERE idempotency_key = 'token-key'`);
    expect(stored.rows[0].text).not.toContain(token);
    expect(stored.rows[0].text).not.toContain(token.slice('writ_admin_'.length));
  });

  it('keeps no plain hash of a body that carries an upstream credential', async () => {
    const secret = 'hunter2';
    const body = {
      id: 'keyed-connector',
      name: 'Keyed',
      base_url: 'https://api.keyed.example',
      credential: { type: 'bearer', token: secret },
      operations: [{ name: 'me.get', method: 'GET', path: '/me', risk: 'read', constraints: {} }],
    };
    const first = await post('/v1/connectors', body, 'connector-key');
    expect(first.status).toBe(201);
    const again = await post('/v1/connectors', body, 'connector-key');
    expect([again.status, again.headers.get('idempotent-replayed'), again.body]).toEqual([201, 'true', first.body]);
    const { rows } = await services.runtime.pool.query(
      `SELECT request_digest, row_to_json(k)::text AS text FROM admin_idempotency_keys k WHERE idempotency_key = 'connector-key'`,
    );
    expect(rows[0].text).not.toContain(secret);
    // A reader of the database cannot test guesses of the credential against the digest.
    for (const text of [canonicalJsonText(body), canonicalJsonText({ endpoint: 'POST /v1/connectors', body })]) {
      expect(rows[0].request_digest).not.toContain(createHash('sha256').update(text).digest('hex'));
    }
  });

  it('answers nothing to a revoked token, and replays a removed resource as it was without making it again', async () => {
    const operator = await newAdminToken('operator');
    const body = { name: 'removed-later', jwks };
    const first = await post('/v1/agents', body, 'removed-key', operator);
    expect(first.status).toBe(201);
    const removed = await http(`${services.adminUrl}/v1/agents/${first.body.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${operator}` } });
    expect(removed.status).toBe(204);
    // A replay is the first answer as it was (documented): it does not create the agent again.
    const replayed = await post('/v1/agents', body, 'removed-key', operator);
    expect([replayed.status, replayed.headers.get('idempotent-replayed'), replayed.body.id]).toEqual([201, 'true', first.body.id]);
    expect(await agentsNamed('removed-later')).toBe(0);
    // Revoked, the token that sent the key gets no replay: authentication comes first.
    const operatorId = (await services.runtime.pool.query(`SELECT admin_token_id AS id FROM admin_idempotency_keys WHERE idempotency_key = 'removed-key'`))
      .rows[0].id;
    const revoked = await http(`${services.adminUrl}/v1/admin-tokens/${operatorId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${services.adminToken}` },
    });
    expect(revoked.status).toBe(204);
    const refused = await post('/v1/agents', body, 'removed-key', operator);
    expect(refused.status).toBe(401);
    expect(JSON.stringify(refused.body)).not.toContain(first.body.id);
    expect(refused.headers.get('idempotent-replayed')).toBeNull();
  });

  it('replays an identity provider and a connect link (the link without its URL, which carries its secret)', async () => {
    const issuer = 'https://idem-login.example.com';
    const provider = { issuer, jwks_uri: `${issuer}/jwks`, audience: 'orchestrator-app' };
    const created = await post('/v1/identity-providers', provider, 'provider-key');
    const replayed = await post('/v1/identity-providers', provider, 'provider-key');
    expect([created.status, replayed.status, replayed.headers.get('idempotent-replayed')]).toEqual([201, 201, 'true']);
    expect(replayed.body).toEqual(created.body);
    expect(await events('admin.identity_provider.created', issuer)).toBe(1);

    await seedCodehost(services, 'http://127.0.0.1:9', 'codehost-secret');
    const link = { connector_id: 'codehost', user: { iss: issuer, sub: 'erin' } };
    const first = await post('/v1/connections/links', link, 'link-key');
    expect(first.status).toBe(201);
    const again = await post('/v1/connections/links', link, 'link-key');
    expect([again.status, again.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
    const { url, ...withoutUrl } = first.body;
    expect(again.body).toEqual(withoutUrl);
    expect(await count(`SELECT count(*)::int AS n FROM connect_links WHERE user_subject = 'erin'`)).toBe(1);
    const stored = await services.runtime.pool.query(`SELECT answer::text AS text FROM admin_idempotency_keys WHERE idempotency_key = 'link-key'`);
    expect(stored.rows[0].text).not.toContain(String(url).split('/').pop());
  });

  describe('POST /v1/keys/rotate', () => {
    const rotations = () => count(`SELECT count(*)::int AS n FROM audit_events WHERE type = 'admin.key.rotated'`);
    const activeKid = async (): Promise<string> => (await services.runtime.pool.query(`SELECT kid FROM signing_keys WHERE status = 'active'`)).rows[0].kid;
    const rotate = (key?: string, base = services.adminUrl) => post('/v1/keys/rotate', undefined, key, services.adminToken, base);

    it('rotates once for a retried rotation sent many times at once to two instances, all answered its kid', async () => {
      const before = await rotations();
      const previous = await activeKid();
      const answers = await Promise.all(Array.from({ length: 12 }, (_, index) => rotate('rotate-key-1', index % 2 ? second.adminUrl : services.adminUrl)));
      expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 201));
      expect(new Set(answers.map((answer) => answer.body.kid)).size).toBe(1);
      expect(answers.filter((answer) => answer.headers.get('idempotent-replayed') === null)).toHaveLength(1);
      expect(await rotations()).toBe(before + 1);
      const kid = answers[0].body.kid as string;
      expect(kid).not.toBe(previous);
      expect(await activeKid()).toBe(kid);
      // The key rotated from keeps verifying (retiring), as after any rotation; nothing was retired twice.
      const { rows } = await services.runtime.pool.query<{ status: string }>(`SELECT status FROM signing_keys WHERE kid = $1`, [previous]);
      expect(rows[0].status).toBe('retiring');

      // A later retry (a lost answer) is the same answer, and rotates nothing.
      const later = await rotate('rotate-key-1', second.adminUrl);
      expect([later.status, later.body, later.headers.get('idempotent-replayed')]).toEqual([201, { kid }, 'true']);
      expect(await rotations()).toBe(before + 1);
      expect(await activeKid()).toBe(kid);
    });

    it('rotates again under a new key or without one (as before), and refuses a key of another request (422)', async () => {
      const before = await rotations();
      expect((await rotate('rotate-key-2')).status).toBe(201);
      expect((await rotate()).status).toBe(201);
      expect((await rotate()).status).toBe(201);
      expect(await rotations()).toBe(before + 3);
      const created = await post('/v1/agents', { name: 'key-for-agents', jwks }, 'rotate-key-3');
      expect(created.status).toBe(201);
      const misused = await rotate('rotate-key-3');
      expect(misused.status).toBe(422);
      expect(misused.body.fields).toEqual([{ field: 'Idempotency-Key', message: expect.any(String) }]);
      expect(await rotations()).toBe(before + 3);
      expect((await rotate('bad key with spaces')).status).toBe(400);
      expect(await rotations()).toBe(before + 3);
    });
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
