import { createClientKey, insertOrchestratorRow, jwksOf, retagRow } from '@writ/testing';
import { exportJWK, generateKeyPair } from 'jose';
import { connect } from 'node:net';
import { hashAdminToken } from '@writ/platform';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { http, sendJson, TestResponse } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

describe('admin API: authentication, roles, agents, orchestrators, keys, admin tokens', () => {
  let services: TestServices;
  let viewer: string;
  let operator: string;

  const api = <T = any>(method: string, path: string, body?: unknown, token: string | undefined = services.adminToken): Promise<TestResponse<T>> =>
    sendJson<T>(method, `${services.adminUrl}${path}`, body, token);
  /** The distinct offending fields of a 400, in order. */
  const fieldsOf = (response: TestResponse) => [...new Set((response.body.fields as Array<{ field: string }>).map((entry) => entry.field))];
  const publicJwks = async () => jwksOf(await createClientKey());

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    viewer = (await api('POST', '/v1/admin-tokens', { name: 'viewer', role: 'viewer' })).body.token;
    operator = (await api('POST', '/v1/admin-tokens', { name: 'operator', role: 'operator' })).body.token;
  });
  afterAll(() => services.close());

  describe('authentication', () => {
    const REQUIRED = 'an admin token is required: Authorization: Bearer <token>';
    const UNKNOWN = 'the admin token is unknown or revoked';
    it.each([
      ['no Authorization header', undefined, REQUIRED],
      ['a malformed bearer value', 'two words', REQUIRED],
      ['an unknown token', 'writ_admin_not_a_real_token', UNKNOWN],
      ['the hash of a valid token', 'HASH', UNKNOWN],
    ])('refuses %s with 401, the challenge and the exact body', async (_name, given, message) => {
      const token = given === 'HASH' ? hashAdminToken(services.adminToken) : given;
      const response = await http(`${services.adminUrl}/v1/agents`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toBe('Bearer realm="writ"');
      expect(response.headers.get('cache-control')).toBe('no-store');
      expect(response.body).toEqual({ error: 'unauthorized', message });
    });

    /** Sends only the head of a request (its body is never sent) and resolves with the status answered and whether the connection closed. */
    const headOnly = (method: string, path: string, headers: Record<string, string>): Promise<{ status: number; head: string }> => {
      const { hostname, port } = new URL(services.adminUrl);
      const head = [
        `${method} ${path} HTTP/1.1`,
        `Host: ${hostname}:${port}`,
        ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
        '',
        '',
      ].join('\r\n');
      return new Promise((resolve, reject) => {
        const socket = connect(Number(port), hostname, () => socket.write(head));
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.on('error', reject);
        // The server closes the connection after its answer: the body it did not read is not waited for.
        socket.on('close', () => {
          const text = Buffer.concat(chunks).toString('latin1');
          resolve({ status: Number(text.split(' ')[1]), head: text.slice(0, text.indexOf('\r\n\r\n')) });
        });
      });
    };

    it.each([
      ['no Authorization header', {}],
      ['another scheme', { authorization: 'Basic d3JpdDp3cml0' }],
      ['an unknown token', { authorization: 'Bearer writ_admin_not_a_real_token' }],
    ])('refuses a body-carrying request with %s with 401 before reading its body', async (_name, auth: Record<string, string>) => {
      // 900 kB announced (within the JSON limit) and never sent: a parser reading first would wait for it.
      const json = await headOnly('POST', '/v1/agents', { 'content-type': 'application/json', 'content-length': '900000', ...auth });
      expect(json.status).toBe(401);
      expect(json.head.toLowerCase()).toContain('www-authenticate: bearer realm="writ"');
      const chunked = await headOnly('PUT', '/v1/policies/active', { 'content-type': 'application/gzip', 'transfer-encoding': 'chunked', ...auth });
      expect(chunked.status).toBe(401);
    });

    it('refuses a policy bundle of a token below admin before reading it: a viewer cannot hold the upload slots', async () => {
      const { hostname, port } = new URL(services.adminUrl);
      // Two slow 8 MB uploads by a viewer (as many as a process reads at once), their bodies barely begun.
      const uploads = [0, 1].map(
        () =>
          new Promise<string>((resolve, reject) => {
            const socket = connect(Number(port), hostname, () =>
              socket.write(
                `PUT /v1/policies/active HTTP/1.1\r\nHost: ${hostname}:${port}\r\nAuthorization: Bearer ${viewer}\r\n` +
                  `Content-Type: application/gzip\r\nContent-Length: 8000000\r\n\r\n${'x'.repeat(1000)}`,
              ),
            );
            const chunks: Buffer[] = [];
            socket.on('data', (chunk: Buffer) => chunks.push(chunk));
            socket.on('error', reject);
            socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
            // Never sent whole: if nothing answers, the socket is cut and the test sees no answer.
            setTimeout(() => socket.destroy(), 3000);
          }),
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      // The admin's upload is read (and refused for what it holds), not turned away as a third upload.
      const admin = await http(`${services.adminUrl}/v1/policies/active`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${services.adminToken}`, 'content-type': 'application/gzip' },
        body: 'not a bundle',
      });
      expect(admin.status).toBe(400);
      for (const answer of await Promise.all(uploads)) {
        expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden');
        expect(answer).toContain('this operation requires the admin role; this token has the viewer role');
      }
      const denied = await services.runtime.pool.query(
        `SELECT data FROM audit_events WHERE type = 'admin.authorization_denied' AND data->>'path' = '/v1/policies/active' AND data->>'role' = 'viewer'`,
      );
      expect(denied.rows).toHaveLength(2);
      expect(denied.rows[0].data).toMatchObject({ method: 'PUT', required_role: 'admin' });
    });

    it('refuses another scheme carrying a valid token', async () => {
      const response = await http(`${services.adminUrl}/v1/agents`, { headers: { authorization: `Basic ${services.adminToken}` } });
      expect(response.status).toBe(401);
    });

    it('refuses a revoked token, and records last use at most once a minute', async () => {
      const created = await api('POST', '/v1/admin-tokens', { name: 'short-lived', role: 'viewer' });
      expect((await api('GET', '/v1/agents', undefined, created.body.token)).status).toBe(200);
      const used = await services.runtime.pool.query('SELECT last_used_at FROM admin_tokens WHERE id = $1', [created.body.id]);
      expect(used.rows[0].last_used_at).toBeInstanceOf(Date);
      expect((await api('GET', '/v1/agents', undefined, created.body.token)).status).toBe(200);
      const again = await services.runtime.pool.query('SELECT last_used_at FROM admin_tokens WHERE id = $1', [created.body.id]);
      expect(again.rows[0].last_used_at).toEqual(used.rows[0].last_used_at);
      expect((await api('DELETE', `/v1/admin-tokens/${created.body.id}`)).status).toBe(204);
      const refused = await api('GET', '/v1/agents', undefined, created.body.token);
      expect(refused.status).toBe(401);
      expect(refused.body).toEqual({ error: 'unauthorized', message: 'the admin token is unknown or revoked' });
    });

    /**
     * Sends a request's head and the first bytes of its body, runs `meanwhile`, then the rest of the
     * body (as a slow client does: its token was authenticated before the body was read), and
     * resolves with the status and body answered.
     */
    const slowBody = async (method: string, path: string, token: string, body: string, meanwhile: () => Promise<void>) => {
      const { hostname, port } = new URL(services.adminUrl);
      const socket = connect(Number(port), hostname);
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      const answered = new Promise<string>((resolve) => socket.on('end', () => resolve(Buffer.concat(chunks).toString('utf8'))));
      const head = `${method} ${path} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`;
      socket.write(head + body.slice(0, 5));
      // The head is authenticated before the body is read: wait for that, then act.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await meanwhile();
      socket.write(body.slice(5));
      const text = await answered;
      return { status: Number(text.split(' ')[1]), body: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown> };
    };

    it('refuses a change whose token was revoked while its body was still arriving, and makes none', async () => {
      const cases: Array<[string, string, Record<string, unknown>, string]> = [
        [
          'POST',
          '/v1/orchestrators',
          { id: 'late-orch', name: 'late', jwks: await publicJwks(), allowed_agents: ['*'] },
          'SELECT count(*)::int AS n FROM orchestrators WHERE id = $1',
        ],
        [
          'POST',
          '/v1/identity-providers',
          { issuer: 'https://late.example', jwks_uri: 'https://late.example/jwks', audience: 'late', asserting_orchestrators: [] },
          'SELECT count(*)::int AS n FROM identity_providers WHERE issuer = $1',
        ],
      ];
      for (const [method, path, payload, count] of cases) {
        const stolen = (await api('POST', '/v1/admin-tokens', { name: 'stolen', role: 'admin' })).body;
        const answer = await slowBody(method, path, stolen.token, JSON.stringify(payload), async () => {
          expect((await api('DELETE', `/v1/admin-tokens/${stolen.id}`)).status).toBe(204);
        });
        expect([path, answer]).toEqual([path, { status: 401, body: { error: 'unauthorized', message: 'the admin token is unknown or revoked' } }]);
        const key = (payload.id ?? payload.issuer) as string;
        expect([path, (await services.runtime.pool.query<{ n: number }>(count, [key])).rows[0].n]).toEqual([path, 0]);
      }
    });

    it('commits no change after the revocation of its token returned (a change waiting on a lock)', async () => {
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      const agent = (await api('POST', '/v1/agents', { name: 'locked', jwks: await publicJwks() })).body.id as string;
      const stolen = (await api('POST', '/v1/admin-tokens', { name: 'stolen', role: 'operator' })).body;
      // Another transaction holds the agent's row: the change, authenticated, waits for it.
      const holder = await services.runtime.pool.connect();
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM agents WHERE id = $1 FOR UPDATE', [agent]);
      const change = api('PATCH', `/v1/agents/${agent}`, { status: 'suspended' }, stolen.token);
      await sleep(300);
      const revocation = api('DELETE', `/v1/admin-tokens/${stolen.id}`);
      await sleep(300);
      await holder.query('ROLLBACK');
      holder.release();
      const [changed, revoked] = await Promise.all([change, revocation]);
      expect(revoked.status).toBe(204);
      const { rows } = await services.runtime.pool.query<{ seq: string; type: string }>(
        `SELECT seq, type FROM audit_events WHERE (type = 'admin.agent.suspended' AND agent_id = $1) OR (type = 'admin.admin_token.revoked' AND data->>'id' = $2)`,
        [agent, stolen.id],
      );
      const seqOf = (type: string) => Number(rows.find((row) => row.type === type)?.seq);
      if (changed.status === 200) {
        // Made before the revocation committed: its event comes first in the chain.
        expect(seqOf('admin.agent.suspended')).toBeLessThan(seqOf('admin.admin_token.revoked'));
      } else {
        expect(changed.status).toBe(401);
        expect((await api('GET', `/v1/agents/${agent}`)).body.status).toBe('active');
      }
      // Other tests count suspended agents.
      expect((await api('DELETE', `/v1/agents/${agent}`)).status).toBe(204);
    });

    // Before its transaction, a change may wait on what its caller controls (a host name's
    // resolution, a candidate policy's trial run) or on a busy table: here, a lock on the table.
    it.each([
      ['connectors', 'PATCH', '/v1/connectors/payments-late', { name: 'Renamed late' }],
      ['policies', 'PUT', '/v1/policies/data', { data: { writ: { config: { quarantine_after: 1 } } } }],
    ])('refuses a change to %s whose token was revoked while it waited, and makes none', async (table, method, path, body) => {
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      const connector = {
        id: 'payments-late',
        name: 'Late',
        base_url: 'https://api.payments.example',
        operations: [{ name: 'a.read', method: 'GET', path: '/a', risk: 'read' }],
      };
      if (table === 'connectors') expect([201, 409]).toContain((await api('POST', '/v1/connectors', connector)).status);
      const events = async () => Number((await services.runtime.pool.query<{ n: string }>('SELECT count(*) AS n FROM audit_events')).rows[0].n);
      const stolen = (await api('POST', '/v1/admin-tokens', { name: 'stolen', role: 'admin' })).body;
      const holder = await services.runtime.pool.connect();
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
      const change = api(method, path, body, stolen.token);
      await sleep(300);
      expect((await api('DELETE', `/v1/admin-tokens/${stolen.id}`)).status).toBe(204);
      const before = await events();
      await holder.query('ROLLBACK');
      holder.release();
      expect((await change).body).toEqual({ error: 'unauthorized', message: 'the admin token is unknown or revoked' });
      // Nothing changed: no event (the change's transaction rolled back).
      expect(await events()).toBe(before);
    });

    it('leaves health and the OpenAPI document open, and documents every endpoint', async () => {
      expect((await http(`${services.adminUrl}/health/live`)).body).toEqual({ status: 'ok' });
      const docs = await http(`${services.adminUrl}/docs-json`);
      expect(docs.status).toBe(200);
      expect(docs.body.info.title).toBe('Writ admin API');
      expect(docs.body.components.securitySchemes).toEqual({ bearer: expect.objectContaining({ type: 'http', scheme: 'bearer' }) });
      expect(Object.keys(docs.body.paths)).toEqual(
        expect.arrayContaining([
          '/health/live',
          '/health/ready',
          '/v1/admin-tokens',
          '/v1/admin-tokens/{id}',
          '/v1/agents',
          '/v1/agents/{id}',
          '/v1/audit',
          '/v1/audit/export',
          '/v1/audit/hash',
          '/v1/audit/verify',
          '/v1/connectors',
          '/v1/connectors/{id}',
          '/v1/keys',
          '/v1/keys/rotate',
          '/v1/orchestrators',
          '/v1/orchestrators/{id}',
          '/v1/policies',
          '/v1/policies/evaluate',
          '/v1/tasks',
          '/v1/tasks/{id}',
          '/v1/tasks/{id}/evidence',
          '/v1/tasks/{id}/revoke',
        ]),
      );
      for (const [path, operations] of Object.entries(docs.body.paths as Record<string, Record<string, { responses: object }>>)) {
        for (const [method, operation] of Object.entries(operations)) {
          if (path.startsWith('/v1/')) expect([path, method, Object.keys(operation.responses)]).toEqual([path, method, expect.arrayContaining(['401', '403'])]);
        }
      }
      const bodies = ['/v1/agents', '/v1/orchestrators', '/v1/connectors', '/v1/admin-tokens', '/v1/policies/evaluate', '/v1/audit/hash'].map(
        (path) => docs.body.paths[path].post.requestBody?.content?.['application/json']?.schema?.$ref,
      );
      expect(bodies.every((ref) => typeof ref === 'string')).toBe(true);
      expect(docs.body.paths['/v1/agents'].post.security).toEqual([{ bearer: [] }]);
      expect(docs.body.components.schemas.CreateConnectorDto.properties).toEqual(
        expect.objectContaining({ id: expect.any(Object), base_url: expect.any(Object), operations: expect.any(Object), credential: expect.any(Object) }),
      );
      expect((await http(`${services.adminUrl}/docs`)).status).toBe(200);
    });
  });

  describe('roles', () => {
    it('lets a viewer read and nothing else', async () => {
      expect((await api('GET', '/v1/agents', undefined, viewer)).status).toBe(200);
      const refused = await api('POST', '/v1/agents', { name: 'x', jwks: await publicJwks() }, viewer);
      expect(refused.status).toBe(403);
      expect(refused.body).toEqual({ error: 'forbidden', message: 'this operation requires the operator role; this token has the viewer role' });
      expect(refused.headers.get('www-authenticate')).toBeNull();
    });

    it('records each refusal of a role as admin.authorization_denied, naming the token, and changes nothing', async () => {
      const self = (await api('GET', '/v1/admin-tokens/self', undefined, viewer)).body;
      const { rows: before } = await services.runtime.pool.query(`SELECT max(seq)::int AS seq FROM audit_events`);
      expect((await api('POST', '/v1/admin-tokens', { name: 'escalate-audited', role: 'admin' }, viewer)).status).toBe(403);
      expect((await api('DELETE', '/v1/agents/nobody', undefined, viewer)).status).toBe(403);
      expect((await api('GET', '/v1/audit/verify?full=true', undefined, viewer)).status).toBe(403);
      const { rows } = await services.runtime.pool.query(
        `SELECT type, outcome, actor_type, actor_id, data FROM audit_events WHERE seq > $1 AND type LIKE 'admin.%' ORDER BY seq`,
        [before[0].seq],
      );
      const denied = (method: string, path: string, required: string) => ({
        type: 'admin.authorization_denied',
        outcome: 'denied',
        actor_type: 'admin',
        actor_id: self.id,
        data: { method, path, role: 'viewer', required_role: required },
      });
      expect(rows).toEqual([
        denied('POST', '/v1/admin-tokens', 'admin'),
        denied('DELETE', '/v1/agents/nobody', 'operator'),
        denied('GET', '/v1/audit/verify?full=true', 'admin'),
      ]);
    });

    it('keeps admin tokens to admins, listing included', async () => {
      for (const token of [viewer, operator]) {
        const create = await api('POST', '/v1/admin-tokens', { name: 'escalate', role: 'admin' }, token);
        expect(create.status).toBe(403);
        expect(create.body.error).toBe('forbidden');
        expect((await api('GET', '/v1/admin-tokens', undefined, token)).status).toBe(403);
      }
      const { rows } = await services.runtime.pool.query(`SELECT count(*)::int AS n FROM admin_tokens WHERE name = 'escalate'`);
      expect(rows[0].n).toBe(0);
    });

    it('keeps identity providers to admins: an operator cannot replace whose users a task may act for', async () => {
      const issuer = 'https://login.example.com';
      const provider = { issuer, jwks_uri: `${issuer}/jwks`, audience: 'orchestrator-app' };
      for (const token of [viewer, operator]) {
        const create = await api('POST', '/v1/identity-providers', provider, token);
        expect(create.status).toBe(403);
        expect(create.body).toEqual({ error: 'forbidden', message: expect.stringContaining('requires the admin role') });
      }
      expect((await api('POST', '/v1/identity-providers', provider)).status).toBe(201);
      const path = `/v1/identity-providers/${encodeURIComponent(issuer)}`;
      for (const token of [viewer, operator]) expect((await api('DELETE', path, undefined, token)).status).toBe(403);
      expect((await api('GET', '/v1/identity-providers', undefined, operator)).body.items).toEqual([expect.objectContaining({ issuer })]);
      expect((await api('DELETE', path)).status).toBe(204);
    });

    it("refuses Writ's own issuer as an identity provider, however it is spelled, naming the field", async () => {
      const own = new URL(services.issuer);
      const spellings = [services.issuer, `${services.issuer}/`, `${own.protocol}//${own.host.toUpperCase()}${own.pathname.replace(/\/$/, '')}`];
      for (const issuer of spellings) {
        const refused = await api('POST', '/v1/identity-providers', { issuer, jwks_uri: 'https://login.example.com/jwks', audience: 'writ' });
        expect([refused.status, refused.body.fields]).toEqual([400, [{ field: 'issuer', message: expect.stringContaining("Writ's own issuer") }]]);
      }
      const { rows } = await services.runtime.pool.query('SELECT count(*)::int AS n FROM identity_providers');
      expect(rows[0].n).toBe(0);
    });
  });

  describe('agents', () => {
    it('registers an agent and shows it; an operator may', async () => {
      const jwks = await publicJwks();
      const created = await api('POST', '/v1/agents', { id: 'billing-agent', name: 'Billing', description: 'pays invoices', jwks }, operator);
      expect(created.status).toBe(201);
      expect(created.body).toEqual({
        id: 'billing-agent',
        name: 'Billing',
        description: 'pays invoices',
        status: 'active',
        jwks: { keys: [{ kty: 'EC', crv: 'P-256', kid: jwks.keys[0].kid, alg: 'ES256', use: 'sig', x: jwks.keys[0].x, y: jwks.keys[0].y }] },
        created_at: expect.any(String),
        updated_at: expect.any(String),
      });
      expect((await api('GET', '/v1/agents/billing-agent', undefined, viewer)).body).toEqual(created.body);
      const events = await services.runtime.pool.query(
        `SELECT actor_type, actor_id, data FROM audit_events WHERE type = 'admin.agent.created' AND agent_id = 'billing-agent'`,
      );
      const operatorId = (await services.runtime.pool.query(`SELECT id FROM admin_tokens WHERE name = 'operator'`)).rows[0].id;
      expect(events.rows).toEqual([
        { actor_type: 'admin', actor_id: operatorId, data: { name: 'Billing', description: 'pays invoices', status: 'active', kids: [jwks.keys[0].kid] } },
      ]);
    });

    it('generates an id when none is given', async () => {
      const created = await api('POST', '/v1/agents', { name: 'anonymous', jwks: await publicJwks() });
      expect(created.status).toBe(201);
      expect(created.body.id).toMatch(/^agent-[0-9a-f]{16}$/);
    });

    it('refuses a private JWK, naming the member', async () => {
      const { privateKey } = await generateKeyPair('ES256', { extractable: true });
      const jwk = { ...(await exportJWK(privateKey)), kid: 'leaked', alg: 'ES256' };
      const response = await api('POST', '/v1/agents', { id: 'leaky', name: 'Leaky', jwks: { keys: [jwk] } });
      expect(response.status).toBe(400);
      expect(response.body).toEqual({
        error: 'invalid_request',
        message: 'the JWKS is not acceptable',
        fields: [{ field: 'jwks.keys[0].d', message: 'private key members are not accepted: register the public key only' }],
      });
      expect(response.text).not.toContain(jwk.d);
      expect((await api('GET', '/v1/agents/leaky')).status).toBe(404);
    });

    it('refuses a symmetric key and an unknown field, naming each', async () => {
      const symmetric = await api('POST', '/v1/agents', { name: 'x', jwks: { keys: [{ kty: 'oct', kid: 'k', k: 'c2VjcmV0' }] } });
      expect(symmetric.status).toBe(400);
      expect(fieldsOf(symmetric)).toEqual(expect.arrayContaining(['jwks.keys[0].k', 'jwks.keys[0].kty']));
      const unknown = await api('POST', '/v1/agents', { name: 'x', jwks: await publicJwks(), client_secret: 'nope' });
      expect(unknown.status).toBe(400);
      expect(unknown.body).toEqual({
        error: 'invalid_request',
        message: 'the request body is invalid',
        fields: [{ field: 'client_secret', message: 'unknown field' }],
      });
      const badId = await api('POST', '/v1/agents', { id: '../etc', name: '', jwks: await publicJwks() });
      expect(fieldsOf(badId)).toEqual(['id', 'name']);
    });

    it('refuses a duplicate id with 409, also across agents and orchestrators', async () => {
      await insertOrchestratorRow(services.runtime.pool, services.runtime.rowIntegrity, { id: 'orch-taken', name: 'o', jwks: { keys: [] }, allowedAgents: [] });
      const jwks = await publicJwks();
      expect((await api('POST', '/v1/agents', { id: 'dup-agent', name: 'one', jwks })).status).toBe(201);
      const again = await api('POST', '/v1/agents', { id: 'dup-agent', name: 'two', jwks });
      expect(again.status).toBe(409);
      expect(again.body).toEqual({ error: 'conflict', message: 'the id dup-agent is already registered (as an agent)' });
      const crossed = await api('POST', '/v1/agents', { id: 'orch-taken', name: 'two', jwks });
      expect(crossed.status).toBe(409);
      expect((await api('GET', '/v1/agents/dup-agent')).body.name).toBe('one');
    });

    it('changes an agent, refusing nulls for required members and private keys', async () => {
      await api('POST', '/v1/agents', { id: 'patch-me', name: 'before', description: 'd', jwks: await publicJwks() });
      const changed = await api('PATCH', '/v1/agents/patch-me', { name: 'after', description: null }, operator);
      expect(changed.status).toBe(200);
      expect(changed.body).toMatchObject({ id: 'patch-me', name: 'after', description: null, status: 'active' });
      expect(fieldsOf(await api('PATCH', '/v1/agents/patch-me', { name: null }))).toEqual(['name']);
      expect(fieldsOf(await api('PATCH', '/v1/agents/patch-me', { status: 'deleted' }))).toEqual(['status']);
      expect(fieldsOf(await api('PATCH', '/v1/agents/patch-me', { id: 'renamed' }))).toEqual(['id']);
      const { privateKey } = await generateKeyPair('ES256', { extractable: true });
      const leaked = await api('PATCH', '/v1/agents/patch-me', { jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'p' }] } });
      expect(fieldsOf(leaked)).toEqual(['jwks.keys[0].d']);
      expect((await api('PATCH', '/v1/agents/nobody', { name: 'x' })).status).toBe(404);
      const types = await services.runtime.pool.query(`SELECT type, data FROM audit_events WHERE agent_id = 'patch-me' ORDER BY seq`);
      expect(types.rows).toEqual([
        { type: 'admin.agent.created', data: expect.any(Object) },
        { type: 'admin.agent.updated', data: { changed: ['name', 'description'] } },
      ]);
    });

    it('guards agent and orchestrator changes with If-Match: parallel edits of one version, one wins, one 412', async () => {
      const conditional = (method: string, path: string, ifMatch: string, body?: unknown) =>
        http(`${services.adminUrl}${path}`, {
          method,
          headers: { authorization: `Bearer ${operator}`, 'if-match': ifMatch, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
          body: body !== undefined ? JSON.stringify(body) : undefined,
        });
      for (const [path, create] of [
        ['/v1/agents', { id: 'etag-agent', name: 'etag', jwks: await publicJwks() }],
        ['/v1/orchestrators', { id: 'etag-orch', name: 'etag', jwks: await publicJwks() }],
      ] as const) {
        const created = await api('POST', path, create);
        const tag = created.headers.get('etag')!;
        expect(tag).toMatch(/^"[A-Za-z0-9_-]{32}"$/);
        const resource = `${path}/${create.id}`;
        expect((await api('GET', resource, undefined, viewer)).headers.get('etag')).toBe(tag);
        const [first, second] = await Promise.all([
          conditional('PATCH', resource, tag, { jwks: await publicJwks() }),
          conditional('PATCH', resource, tag, { status: 'suspended' }),
        ]);
        expect([resource, [first.status, second.status].sort()]).toEqual([resource, [200, 412]]);
        const won = first.status === 200 ? first : second;
        const now = await api('GET', resource);
        expect(now.body).toEqual(won.body);
        expect(now.headers.get('etag')).toBe(won.headers.get('etag'));
        expect((await conditional('DELETE', resource, tag)).status).toBe(412);
        expect((await api('GET', resource)).status).toBe(200);
        expect((await conditional('DELETE', resource, now.headers.get('etag')!)).status).toBe(204);
      }
    });

    it('lists agents in cursor pages, filtered by status', async () => {
      for (const id of ['page-a', 'page-b', 'page-c']) await api('POST', '/v1/agents', { id, name: id, jwks: await publicJwks() });
      await api('PATCH', '/v1/agents/page-b', { status: 'suspended' });
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: TestResponse = await api('GET', `/v1/agents?limit=2${cursor ? `&cursor=${cursor}` : ''}`, undefined, viewer);
        expect(page.status).toBe(200);
        expect(page.body.items.length).toBeLessThanOrEqual(2);
        seen.push(...page.body.items.map((agent: { id: string }) => agent.id));
        cursor = page.body.next_cursor;
      } while (cursor);
      const all = (await services.runtime.pool.query('SELECT id FROM agents ORDER BY id')).rows.map((row) => row.id);
      expect(seen).toEqual(all);
      const suspended = await api('GET', '/v1/agents?status=suspended');
      expect(suspended.body).toEqual({ items: [expect.objectContaining({ id: 'page-b', status: 'suspended' })], next_cursor: null });
      expect(fieldsOf(await api('GET', '/v1/agents?limit=0'))).toEqual(['limit']);
      expect(fieldsOf(await api('GET', '/v1/agents?limit=201'))).toEqual(['limit']);
      expect(fieldsOf(await api('GET', '/v1/agents?cursor=bm90LWpzb24'))).toEqual(['cursor']);
      expect(fieldsOf(await api('GET', '/v1/agents?sort=name'))).toEqual(['sort']);
    });
  });

  describe('orchestrators', () => {
    it('registers an orchestrator with its agents, and refuses bad entries by field', async () => {
      const created = await api(
        'POST',
        '/v1/orchestrators',
        { id: 'billing-orch', name: 'Billing', jwks: await publicJwks(), allowed_agents: ['billing-agent', 'agent-x'] },
        operator,
      );
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({
        id: 'billing-orch',
        name: 'Billing',
        description: null,
        status: 'active',
        allowed_agents: ['billing-agent', 'agent-x'],
      });
      expect((await api('GET', '/v1/orchestrators/billing-orch', undefined, viewer)).body).toEqual(created.body);
      const bad = await api('POST', '/v1/orchestrators', { name: 'x', jwks: await publicJwks(), allowed_agents: ['ok', 'no spaces', '**'] });
      expect(bad.status).toBe(400);
      expect(fieldsOf(bad)).toEqual(['allowed_agents']);
      const dup = await api('POST', '/v1/orchestrators', { id: 'billing-agent', name: 'x', jwks: await publicJwks() });
      expect(dup.status).toBe(409);
      expect(dup.body.message).toBe('the id billing-agent is already registered (as an agent)');
      const generated = await api('POST', '/v1/orchestrators', { name: 'any', jwks: await publicJwks(), allowed_agents: ['*'] });
      expect(generated.body).toMatchObject({ id: expect.stringMatching(/^orch-[0-9a-f]{16}$/), allowed_agents: ['*'] });
      const { privateKey } = await generateKeyPair('ES256', { extractable: true });
      const leaky = await api('POST', '/v1/orchestrators', { name: 'x', jwks: { keys: [{ ...(await exportJWK(privateKey)), kid: 'k' }] } });
      expect(fieldsOf(leaky)).toEqual(['jwks.keys[0].d']);
    });

    it('changes, suspends (revoking its Tasks API tokens) and deletes an orchestrator', async () => {
      await api('POST', '/v1/orchestrators', { id: 'orch-life', name: 'life', jwks: await publicJwks() });
      await services.runtime.pool.query(
        `INSERT INTO access_tokens (jti, kind, client_id, subject, scope, issued_at, expires_at)
         VALUES ('tasks-jti-1', 'tasks', 'orch-life', 'orch-life', 'tasks', now(), now() + interval '5 minutes')`,
      );
      const changed = await api('PATCH', '/v1/orchestrators/orch-life', { allowed_agents: ['*'], description: 'runs everything' }, operator);
      expect(changed.body).toMatchObject({ allowed_agents: ['*'], description: 'runs everything', status: 'active' });
      const suspended = await api('PATCH', '/v1/orchestrators/orch-life', { status: 'suspended' }, operator);
      expect(suspended.body.status).toBe('suspended');
      const token = await services.runtime.pool.query(`SELECT revoked_reason FROM access_tokens WHERE jti = 'tasks-jti-1'`);
      expect(token.rows[0].revoked_reason).toBe('orchestrator suspended');
      expect((await api('GET', '/v1/orchestrators?status=suspended')).body.items.map((o: { id: string }) => o.id)).toEqual(['orch-life']);
      expect((await api('DELETE', '/v1/orchestrators/orch-life', undefined, operator)).status).toBe(204);
      expect((await api('GET', '/v1/orchestrators/orch-life')).status).toBe(404);
      const events = await services.runtime.pool.query(
        `SELECT type, data FROM audit_events WHERE type LIKE 'admin.orchestrator.%' AND data->>'id' = 'orch-life' ORDER BY seq`,
      );
      expect(events.rows).toEqual([
        { type: 'admin.orchestrator.created', data: expect.objectContaining({ id: 'orch-life', allowed_agents: [] }) },
        { type: 'admin.orchestrator.updated', data: { id: 'orch-life', changed: ['description', 'allowed_agents'], allowed_agents: ['*'] } },
        { type: 'admin.orchestrator.suspended', data: { id: 'orch-life', tokens_revoked: 1 } },
        { type: 'admin.orchestrator.deleted', data: { id: 'orch-life', tokens_revoked: 0 } },
      ]);
    });
  });

  describe('signing keys', () => {
    it('lists keys without private material and rotates them (admin only), audited', async () => {
      const listed = await api('GET', '/v1/keys', undefined, viewer);
      expect(listed.status).toBe(200);
      // The next key is published before it signs.
      expect(listed.body).toEqual({
        items: [
          { kid: expect.any(String), alg: 'ES256', status: 'next', created_at: expect.any(String), retired_at: null },
          { kid: services.runtime.signingKeys.activeKid(), alg: 'ES256', status: 'active', created_at: expect.any(String), retired_at: null },
        ],
        next_cursor: null,
      });
      const published = listed.body.items[0].kid as string;
      expect(listed.text).not.toMatch(/"d"|private|sealed/);
      const refused = await api('POST', '/v1/keys/rotate', undefined, operator);
      expect(refused.status).toBe(403);
      expect(refused.body).toEqual({ error: 'forbidden', message: 'this operation requires the admin role; this token has the operator role' });
      const previous = services.runtime.signingKeys.activeKid();
      const rotated = await api('POST', '/v1/keys/rotate');
      expect(rotated.status).toBe(201);
      expect(rotated.body).toEqual({ kid: expect.any(String) });
      expect(rotated.body.kid).not.toBe(previous);
      expect(rotated.body.kid).toBe(published);
      expect(services.runtime.signingKeys.activeKid()).toBe(rotated.body.kid);
      const after = await api('GET', '/v1/keys');
      const statuses = after.body.items.map((key: { kid: string; status: string }) => [key.kid, key.status]);
      expect(statuses).toEqual([
        [expect.any(String), 'next'],
        [rotated.body.kid, 'active'],
        [previous, 'retiring'],
      ]);
      const jwks = await http(`${services.issuer}/oauth2/jwks`);
      expect(jwks.body.keys.map((key: { kid: string }) => key.kid).sort()).toEqual([previous, rotated.body.kid, statuses[0][0]].sort());
      const events = await services.runtime.pool.query(`SELECT actor_type, data FROM audit_events WHERE type = 'admin.key.rotated'`);
      expect(events.rows).toEqual([{ actor_type: 'admin', data: { kid: rotated.body.kid, previous_kid: previous } }]);
    });
  });

  describe('lists that were never paged', () => {
    it('pages signing keys and identity providers with limit and cursor, as every list does', async () => {
      await api('POST', '/v1/keys/rotate');
      for (const name of ['a', 'b', 'c']) {
        const issuer = `https://paging-${name}.example.com`;
        expect((await api('POST', '/v1/identity-providers', { issuer, jwks_uri: `${issuer}/jwks`, audience: 'x' })).status).toBe(201);
      }
      for (const [path, key] of [
        ['/v1/keys', 'kid'],
        ['/v1/identity-providers', 'issuer'],
      ] as const) {
        const whole = await api('GET', path, undefined, viewer);
        expect(whole.body.items.length).toBeGreaterThanOrEqual(3);
        const seen: string[] = [];
        let cursor: string | null = null;
        do {
          const page: TestResponse = await api('GET', `${path}?limit=1${cursor ? `&cursor=${cursor}` : ''}`, undefined, viewer);
          expect([path, page.status, page.body.items.length]).toEqual([path, 200, 1]);
          seen.push(page.body.items[0][key]);
          cursor = page.body.next_cursor;
        } while (cursor);
        expect(seen).toEqual(whole.body.items.map((item: Record<string, string>) => item[key]));
        expect(fieldsOf(await api('GET', `${path}?limit=0`))).toEqual(['limit']);
        expect(fieldsOf(await api('GET', `${path}?cursor=${Buffer.from('{"k":1}').toString('base64url')}`))).toEqual(['cursor']);
      }
      expect(fieldsOf(await api('GET', `/v1/keys?cursor=${Buffer.from('{"k":"no-such-kid"}').toString('base64url')}`))).toEqual(['cursor']);
      // An issuer of 2048 characters still makes a cursor the next page accepts.
      const long = `https://${'l'.repeat(2020)}.example.com`;
      expect((await api('POST', '/v1/identity-providers', { issuer: long, jwks_uri: 'https://long.example.com/jwks', audience: 'x' })).status).toBe(201);
      const before = (await api('GET', '/v1/identity-providers')).body.items.map((item: { issuer: string }) => item.issuer);
      const at = before.indexOf(long);
      const first = await api('GET', `/v1/identity-providers?limit=${at + 1}`);
      expect(first.body.next_cursor).toEqual(expect.any(String));
      const rest = await api('GET', `/v1/identity-providers?cursor=${first.body.next_cursor}`);
      expect(rest.status).toBe(200);
      expect(rest.body.items.map((item: { issuer: string }) => item.issuer)).toEqual(before.slice(at + 1));
    });
  });

  describe('admin tokens', () => {
    it('shows a token once, stores only its hash, and lists without it', async () => {
      const created = await api('POST', '/v1/admin-tokens', { name: 'ci', role: 'operator' });
      expect(created.status).toBe(201);
      expect(created.body).toEqual({
        id: expect.any(String),
        name: 'ci',
        role: 'operator',
        token: expect.stringMatching(/^writ_admin_[A-Za-z0-9_-]{43}$/),
        created_at: expect.any(String),
        expires_at: null,
      });
      const stored = await services.runtime.pool.query('SELECT token_hash FROM admin_tokens WHERE id = $1', [created.body.id]);
      expect(stored.rows[0].token_hash).not.toBe(created.body.token);
      expect(stored.rows[0].token_hash).toMatch(/^[0-9a-f]{64}$/);
      const list = await api('GET', '/v1/admin-tokens?limit=200');
      expect(list.status).toBe(200);
      expect(list.text).not.toContain(created.body.token);
      expect(list.text).not.toContain(stored.rows[0].token_hash);
      expect(list.body.items.find((item: { id: string }) => item.id === created.body.id)).toEqual({
        id: created.body.id,
        name: 'ci',
        role: 'operator',
        created_by: expect.any(String),
        created_at: created.body.created_at,
        last_used_at: null,
        revoked_at: null,
        expires_at: null,
      });
      const events = await services.runtime.pool.query(`SELECT data::text AS data FROM audit_events WHERE type LIKE 'admin.admin_token.%'`);
      expect(events.rows.length).toBeGreaterThan(0);
      for (const row of events.rows) {
        expect(row.data).not.toContain(created.body.token);
        expect(row.data).not.toContain(stored.rows[0].token_hash);
      }
    });

    it('makes a token that expires: shown with its expiry, refused once past it, in every use', async () => {
      const before = Date.now();
      const created = await api('POST', '/v1/admin-tokens', { name: 'for-a-day', role: 'admin', expires_in: 86_400 });
      expect(created.status).toBe(201);
      const expiresAt = Date.parse(created.body.expires_at);
      expect(expiresAt).toBeGreaterThanOrEqual(before + 86_400_000 - 5_000);
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + 86_400_000 + 5_000);
      const token = created.body.token as string;
      expect((await api('GET', '/v1/agents', undefined, token)).status).toBe(200);
      const listed = (await api('GET', '/v1/admin-tokens?limit=200')).body.items.find((item: { id: string }) => item.id === created.body.id);
      expect(listed.expires_at).toBe(created.body.expires_at);
      const event = await services.runtime.pool.query(`SELECT data FROM audit_events WHERE type = 'admin.admin_token.created' AND data->>'id' = $1`, [
        created.body.id,
      ]);
      expect(event.rows[0].data.expires_at).toBe(created.body.expires_at);
      // The day has passed.
      await services.runtime.pool.query(`UPDATE admin_tokens SET expires_at = now() - interval '1 second' WHERE id = $1`, [created.body.id]);
      await retagRow(services.runtime.pool, services.runtime.rowIntegrity, 'admin_tokens', created.body.id);
      const refused = await api('GET', '/v1/agents', undefined, token);
      expect(refused.status).toBe(401);
      expect(refused.body.message).toBe('the admin token has expired');
      expect((await api('POST', '/v1/admin-tokens', { name: 'heir', role: 'admin' }, token)).status).toBe(401);
      expect((await api('DELETE', `/v1/admin-tokens/${created.body.id}`, undefined, token)).status).toBe(401);
      const failed = await services.runtime.pool.query(
        `SELECT data->>'reason' AS reason FROM audit_events WHERE type = 'admin.authentication_failed' ORDER BY seq DESC LIMIT 1`,
      );
      expect(failed.rows[0].reason).toBe('expired');
      // Bounds and types: a minute to a year, whole seconds.
      for (const expires_in of [59, 365 * 24 * 3600 + 1, 1.5, '3600', -60]) {
        expect(fieldsOf(await api('POST', '/v1/admin-tokens', { name: 'bounded', role: 'viewer', expires_in }))).toEqual(['expires_in']);
      }
      expect((await api('POST', '/v1/admin-tokens', { name: 'a-minute', role: 'viewer', expires_in: 60 })).status).toBe(201);
    });

    it('never lets a token that expires make one that outlives it', async () => {
      const parent = await api('POST', '/v1/admin-tokens', { name: 'temporary-admin', role: 'admin', expires_in: 3600 });
      expect(parent.status).toBe(201);
      const parentExpiry = Date.parse(parent.body.expires_at);
      // Asked for no expiry, or a longer one: it ends with its creator.
      for (const asked of [{}, { expires_in: 31_536_000 }]) {
        const child = await api('POST', '/v1/admin-tokens', { name: 'heir', role: 'admin', ...asked }, parent.body.token);
        expect(child.status).toBe(201);
        expect(Date.parse(child.body.expires_at)).toBe(parentExpiry);
        const stored = await services.runtime.pool.query(`SELECT expires_at FROM admin_tokens WHERE id = $1`, [child.body.id]);
        expect(stored.rows[0].expires_at.getTime()).toBe(parentExpiry);
      }
      // A shorter one is kept.
      const shorter = await api('POST', '/v1/admin-tokens', { name: 'brief', role: 'viewer', expires_in: 60 }, parent.body.token);
      expect(Date.parse(shorter.body.expires_at)).toBeLessThan(parentExpiry);
      // A token without an expiry still makes ones without.
      expect((await api('POST', '/v1/admin-tokens', { name: 'lasting', role: 'viewer' })).body.expires_at).toBeNull();
    });

    it('pages the list with a cursor', async () => {
      for (let n = 0; n < 3; n += 1) await api('POST', '/v1/admin-tokens', { name: `bulk-${n}`, role: 'viewer' });
      const ids: string[] = [];
      let cursor: string | null = null;
      do {
        const page: TestResponse = await api('GET', `/v1/admin-tokens?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
        ids.push(...page.body.items.map((item: { id: string }) => item.id));
        cursor = page.body.next_cursor;
      } while (cursor);
      const { rows } = await services.runtime.pool.query('SELECT id FROM admin_tokens');
      expect(ids.sort()).toEqual(rows.map((row) => row.id).sort());
    });

    it('refuses an unknown role, and an admin revoking the token it uses', async () => {
      expect(fieldsOf(await api('POST', '/v1/admin-tokens', { name: 'root', role: 'superuser' }))).toEqual(['role']);
      const own = (await services.runtime.pool.query(`SELECT id FROM admin_tokens WHERE name = 'bootstrap'`)).rows[0].id;
      const refused = await api('DELETE', `/v1/admin-tokens/${own}`);
      expect(refused.status).toBe(409);
      expect(refused.body).toEqual({ error: 'conflict', message: 'an admin token cannot revoke itself: use another admin token' });
      expect((await api('GET', '/v1/agents')).status).toBe(200);
      expect((await api('DELETE', '/v1/admin-tokens/00000000-0000-4000-8000-000000000000')).status).toBe(404);
    });

    it('lets a second admin revoke the first, and audits both changes with the acting token', async () => {
      const second = await api('POST', '/v1/admin-tokens', { name: 'second-admin', role: 'admin' });
      const third = await api('POST', '/v1/admin-tokens', { name: 'third-admin', role: 'admin' }, second.body.token);
      expect(third.status).toBe(201);
      expect((await api('DELETE', `/v1/admin-tokens/${third.body.id}`, undefined, second.body.token)).status).toBe(204);
      expect((await api('GET', '/v1/agents', undefined, third.body.token)).status).toBe(401);
      const events = await services.runtime.pool.query(
        `SELECT type, actor_id, data FROM audit_events WHERE type LIKE 'admin.admin_token.%' AND data->>'id' = $1 ORDER BY seq`,
        [third.body.id],
      );
      expect(events.rows).toEqual([
        { type: 'admin.admin_token.created', actor_id: second.body.id, data: { id: third.body.id, name: 'third-admin', role: 'admin', expires_at: null } },
        { type: 'admin.admin_token.revoked', actor_id: second.body.id, data: { id: third.body.id, descendants: [], descendant_count: 0 } },
      ]);
    });

    it('never loses both of two admins revoking each other at once, and a revoked token creates nothing', async () => {
      for (let round = 0; round < 5; round += 1) {
        const a = (await api('POST', '/v1/admin-tokens', { name: `mutual-a-${round}`, role: 'admin' })).body;
        const b = (await api('POST', '/v1/admin-tokens', { name: `mutual-b-${round}`, role: 'admin' })).body;
        const answers = await Promise.all([
          api('DELETE', `/v1/admin-tokens/${b.id}`, undefined, a.token),
          api('DELETE', `/v1/admin-tokens/${a.id}`, undefined, b.token),
        ]);
        const { rows } = await services.runtime.pool.query(`SELECT count(*)::int AS n FROM admin_tokens WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL`, [
          [a.id, b.id],
        ]);
        // Exactly one revocation applies; the other request's own token was revoked first: 401, nothing changed.
        expect([round, rows[0].n, answers.map((answer) => answer.status).sort()]).toEqual([round, 1, [204, 401]]);
        const { rows: events } = await services.runtime.pool.query(
          `SELECT count(*)::int AS n FROM audit_events WHERE type = 'admin.admin_token.revoked' AND data->>'id' = ANY($1::text[])`,
          [[a.id, b.id]],
        );
        expect(events[0].n).toBe(1);
      }
      // A creation racing the revocation of its own token: either it committed first (and its token is listed), or it is a 401.
      const doomed = (await api('POST', '/v1/admin-tokens', { name: 'doomed', role: 'admin' })).body;
      const [created, revoked] = await Promise.all([
        api('POST', '/v1/admin-tokens', { name: 'persistence', role: 'admin' }, doomed.token),
        api('DELETE', `/v1/admin-tokens/${doomed.id}`),
      ]);
      expect(revoked.status).toBe(204);
      expect([201, 401]).toContain(created.status);
      const { rows } = await services.runtime.pool.query(`SELECT count(*)::int AS n FROM admin_tokens WHERE name = 'persistence'`);
      expect(rows[0].n).toBe(created.status === 201 ? 1 : 0);
    });
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
