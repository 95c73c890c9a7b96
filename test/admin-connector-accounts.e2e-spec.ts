import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { insertIdentityProviderRow, waitForLockWaiter } from '@writ/testing';
import { accountSealContext } from '@writ/accounts';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, seedWorld, World } from './support/grant-flow';
import { MockUpstream, startMockUpstream } from './support/mock-upstreams';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

const ISSUER = 'https://sso.corp.example';
const OPERATIONS = [{ name: 'me.get', method: 'GET', path: '/api/me', risk: 'read', constraints: {} }];

/**
 * An operator cannot redirect users' connected-account tokens: their tokens were granted for the
 * connector's destinations (its base_url, token endpoint and revocation endpoint), and an
 * operator who changes one of them (supplying an app credential of their own, which the API
 * requires anyway) must not get the gateway or a disconnect to send the users' tokens there.
 */
describe('admin API: connector changes and users connected accounts', () => {
  let services: TestServices;
  let world: World;
  let operator: string;
  let provider: MockUpstream;
  let attacker: MockUpstream;
  let seq = 0;

  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, operator);
  const credential = (overrides: Record<string, unknown> = {}) => ({
    type: 'oauth2_authorization_code',
    authorization_url: `${provider.url}/authorize`,
    token_url: `${provider.url}/token`,
    revocation_url: `${provider.url}/revoke`,
    client_id: 'writ-app',
    client_secret: 'app-secret',
    scopes: ['read'],
    ...overrides,
  });
  /** What the attacker's host received, as text. */
  const seenByAttacker = () => attacker.received.map((request) => `${JSON.stringify(request.headers)} ${request.body.toString('utf8')}`).join('\n');

  /** A connector whose users connected accounts; returns the user's secrets and connection id. */
  async function connectorWithUser(id: string): Promise<{ access: string; refresh: string; connection: string; subject: string }> {
    const created = await admin('POST', '/v1/connectors', { id, name: id, base_url: provider.url, credential: credential(), operations: OPERATIONS });
    expect(created.status).toBe(201);
    const subject = `user-${(seq += 1)}`;
    const access = `access-${randomUUID()}`;
    const refresh = `refresh-${randomUUID()}`;
    const connection = randomUUID();
    // As the connect callback stores them: sealed for this connector, its token endpoint and the user.
    const sealed = services.runtime.masterKey.seal(
      JSON.stringify({ access_token: access, refresh_token: refresh }),
      accountSealContext(id, `${provider.url}/token`, { issuer: ISSUER, subject }),
    );
    await services.runtime.pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed) VALUES ($1, $2, $3, $4, 'active', '{read}', $5)`,
      [connection, id, ISSUER, subject, sealed],
    );
    return { access, refresh, connection, subject };
  }

  beforeAll(async () => {
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    provider = await startMockUpstream(() => true, {
      'POST /revoke': (_request, response) => void response.writeHead(200).end(),
      'GET /api/me': (_request, response) => void response.writeHead(200, { 'content-type': 'application/json' }).end('{"login":"user"}'),
    });
    attacker = await startMockUpstream(() => true, {
      'POST /revoke': (_request, response) => void response.writeHead(200).end(),
      'GET /api/me': (_request, response) => void response.writeHead(200, { 'content-type': 'application/json' }).end('{"login":"attacker"}'),
    });
    await insertIdentityProviderRow(services.runtime.pool, services.runtime.rowIntegrity, {
      issuer: ISSUER,
      jwksUri: `${ISSUER}/jwks`,
      assertingOrchestrators: ['orch-1'],
    });
    const created = await sendJson('POST', `${services.adminUrl}/v1/admin-tokens`, { name: 'ops', role: 'operator' }, services.adminToken);
    operator = created.body.token;
  });
  afterAll(async () => {
    await services?.close();
    await provider?.close();
    await attacker?.close();
  });

  it("does not let a new revocation_url receive users' tokens on disconnect", async () => {
    const user = await connectorWithUser('codehost-revoke');
    const rotated = await admin('PATCH', '/v1/connectors/codehost-revoke', { credential: credential({ revocation_url: `${attacker.url}/revoke` }) });
    expect(rotated.status).toBe(200);
    await admin('DELETE', `/v1/connections/${user.connection}`);
    expect(seenByAttacker()).not.toContain(user.refresh);
    expect(seenByAttacker()).not.toContain(user.access);
    // The connection was removed with the change, and revoked where it was granted.
    const { rows } = await services.runtime.pool.query<{ type: string; data: Record<string, unknown> }>(
      `SELECT type, data FROM audit_events WHERE connector_id = 'codehost-revoke' AND type LIKE 'connection.%' ORDER BY seq`,
    );
    expect(rows.map((row) => [row.type, row.data.reason ?? row.data.result])).toEqual([
      ['connection.disconnected', 'connector destination changed'],
      ['connection.upstream_revoked', 'revoked'],
    ]);
    expect(provider.received.some((request) => request.url === '/revoke' && request.body.toString('utf8').includes(user.refresh))).toBe(true);
  });

  it("does not let a new base_url receive users' access tokens from the gateway", async () => {
    const user = await connectorWithUser('codehost-moved');
    const moved = await admin('PATCH', '/v1/connectors/codehost-moved', { base_url: attacker.url, credential: credential() });
    expect(moved.status).toBe(200);
    const allowed = [{ type: 'connector', connector: 'codehost-moved', actions: ['me.get'] }];
    const task = await createTask(services, world.orchestrator, { allowed, user: { iss: ISSUER, sub: user.subject } });
    const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, allowed));
    expect(exchanged.status).toBe(200);
    const call = await http(`${services.gatewayUrl}/connectors/codehost-moved/api/me`, { headers: { authorization: `Bearer ${exchanged.body.access_token}` } });
    expect(seenByAttacker()).not.toContain(user.access);
    expect(call.status).toBe(403);
    expect(call.body.error_description).toMatch(/has not connected an account/);
    expect((await admin('GET', '/v1/connections?connector_id=codehost-moved')).body.items).toEqual([]);
  });

  it('revokes a disconnected account with the credential it was granted under, even when a new revocation_url commits with the disconnect', async () => {
    const user = await connectorWithUser('codehost-race');
    // Both changes committed in one audit batch (group commit): the disconnect first, the new
    // revocation_url right after it, before the disconnect revokes at the upstream.
    const holder = new Client({ connectionString: services.db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE');
      const first = admin('PATCH', '/v1/agents/agent-2', { name: 'first in line' });
      await waitForLockWaiter(services.runtime.pool, 'the first audit batch never waited for the chain head');
      const disconnected = admin('DELETE', `/v1/connections/${user.connection}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const rotated = admin('PATCH', '/v1/connectors/codehost-race', { credential: credential({ revocation_url: `${attacker.url}/revoke` }) });
      await new Promise((resolve) => setTimeout(resolve, 300));
      await holder.query('COMMIT');
      expect((await first).status).toBe(200);
      expect((await rotated).status).toBe(200);
      expect((await disconnected).status).toBe(200);
    } finally {
      await holder.end();
    }
    expect(seenByAttacker()).not.toContain(user.refresh);
    expect(provider.received.some((request) => request.url === '/revoke' && request.body.toString('utf8').includes(user.refresh))).toBe(true);
  });

  it('removes connections with the credential, so that a later credential with other destinations never opens them', async () => {
    const user = await connectorWithUser('codehost-cleared');
    expect((await admin('PATCH', '/v1/connectors/codehost-cleared', { credential: null })).status).toBe(200);
    expect((await admin('GET', '/v1/connections?connector_id=codehost-cleared')).body.items).toEqual([]);
    expect((await admin('PATCH', '/v1/connectors/codehost-cleared', { credential: credential({ revocation_url: `${attacker.url}/revoke` }) })).status).toBe(
      200,
    );
    expect(seenByAttacker()).not.toContain(user.refresh);
  });

  it('keeps connections through a rotation that keeps every destination, and through a rename', async () => {
    const user = await connectorWithUser('codehost-kept');
    expect((await admin('PATCH', '/v1/connectors/codehost-kept', { credential: credential({ client_secret: 'new-app-secret' }) })).status).toBe(200);
    expect((await admin('PATCH', '/v1/connectors/codehost-kept', { name: 'Code host' })).status).toBe(200);
    const listed = await admin('GET', '/v1/connections?connector_id=codehost-kept');
    expect(listed.body.items.map((item: { id: string }) => item.id)).toEqual([user.connection]);
  });
});
