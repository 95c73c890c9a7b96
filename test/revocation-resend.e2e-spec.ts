import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CryptoKey } from 'jose';
import type { Pool } from 'pg';
import { accountSealContext } from '@writ/accounts';
import { clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { credentialForUser, startIdentityProvider, tasksToken } from './support/grant-flow';
import { http, postForm, sendJson, type TestClient } from './support/oauth-client';
import { seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const OPERATIONS = [{ name: 'me.get', method: 'GET', path: '/api/me', risk: 'read', constraints: {} }];
const ALLOWED = [{ type: 'connector', connector: 'codehost', actions: ['me.get'] }];
const IDP = 'https://idp.resend.example';

/**
 * A call the gateway allowed, sent, and got a `401` for from the upstream: the gateway refreshes
 * the upstream token (holding the connected account's refresh lease, for as long as the user's
 * token endpoint takes, up to the upstream timeout) and sends the call again. A task ended
 * meanwhile (its end answered) must not have the call sent again: the resend is a call
 * forwarded after the end returned.
 */
describe('gateway: the resend after an upstream 401, when the task ends during the refresh', () => {
  let services: TestServices;
  let pool: Pool;
  let agent: TestClient;
  let orchestrator: TestClient;
  let idp: { key: CryptoKey; close: () => Promise<void> };
  let upstream: Server;
  let tokenEndpoint: Server;
  let tokenUrl: string;
  /** Calls the upstream received, with the access token each carried. */
  const received: string[] = [];
  /** Refresh requests held open until the test answers them. */
  const held: ServerResponse[] = [];
  let refreshArrived: () => void = () => undefined;

  const listen = async (server: Server) => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };

  beforeAll(async () => {
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    pool = services.runtime.pool;
    agent = await seedAgent(pool, 'agent-1');
    orchestrator = await seedOrchestrator(pool, 'orch-1', ['agent-1']);
    idp = await startIdentityProvider(pool, IDP);
    // The upstream refuses the first token (revoked at the provider) and accepts refreshed ones.
    upstream = createServer((req: IncomingMessage, res) => {
      const token = String(req.headers.authorization ?? '');
      received.push(token);
      req.resume();
      if (!token.includes('refreshed')) {
        res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ login: 'octocat' }));
    });
    const upstreamUrl = await listen(upstream);
    tokenEndpoint = createServer((req, res) => {
      req.resume();
      held.push(res);
      refreshArrived();
    });
    tokenUrl = `${await listen(tokenEndpoint)}/token`;
    await seedConnector(pool, 'codehost', OPERATIONS, upstreamUrl);
    await setConnectorCredential(pool, services.runtime.masterKey, 'codehost', {
      type: 'oauth2_authorization_code',
      authorization_url: `${tokenUrl.replace(/\/token$/, '')}/auth`,
      token_url: tokenUrl,
      client_id: 'writ-upstream',
      client_secret: 'upstream-secret-5e1d',
      scopes: ['repo:read'],
    });
  });
  afterAll(async () => {
    await idp?.close();
    for (const server of [upstream, tokenEndpoint]) {
      server?.closeAllConnections();
      server?.close();
    }
    await services?.close();
  });

  async function connected(subject: string, expired = false): Promise<void> {
    const user = { issuer: IDP, subject };
    const sealed = services.runtime.masterKey.seal(
      JSON.stringify({ access_token: `at_${subject}_${randomUUID()}`, refresh_token: `rt_${subject}` }),
      accountSealContext('codehost', tokenUrl, user),
    );
    await pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, access_expires_at)
       VALUES ($1, 'codehost', $2, $3, 'active', '{repo:read}', $4, now() + ($5 || ' seconds')::interval)`,
      [randomUUID(), IDP, subject, sealed, expired ? '-60' : '3600'],
    );
  }

  const answerRefresh = (res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ access_token: `refreshed_${randomUUID()}`, token_type: 'Bearer', expires_in: 3600, refresh_token: `rt_${randomUUID()}` }));
  };

  it.each(['complete', 'admin-revoke', 'rfc7009'] as const)('sends nothing again once the task has ended or the credential is revoked (%s)', async (how) => {
    const subject = `user-${how}`;
    await connected(subject);
    const credential = await credentialForUser(services, orchestrator, agent, { issuer: IDP, subject, key: idp.key }, ALLOWED);
    const taskId = JSON.parse(Buffer.from(credential.split('.')[1], 'base64url').toString()).task_id as string;
    const before = received.length;
    const arrived = new Promise<void>((resolve) => (refreshArrived = resolve));
    const call = http(`${services.gatewayUrl}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${credential}` } });
    // The first send got its 401; the gateway holds the account's refresh lease, waiting on the provider.
    await arrived;
    expect(received.length).toBe(before + 1);
    const ended =
      how === 'complete'
        ? await sendJson('POST', `${services.issuer}/v1/tasks/${taskId}/complete`, undefined, await tasksToken(services, orchestrator))
        : how === 'admin-revoke'
          ? await sendJson('POST', `${services.adminUrl}/v1/tasks/${taskId}/revoke`, { reason: 'stop' }, services.adminToken)
          : await postForm(`${services.issuer}/oauth2/revoke`, { token: credential, ...(await clientAuthFields(agent.id, agent.key, services.issuer)) });
    expect(ended.status).toBe(200);
    // The end has answered: the provider now answers the refresh.
    answerRefresh(held.shift()!);
    const answer = await call;
    expect(received.length).toBe(before + 1);
    expect(answer.status).toBe(401);
    expect(answer.headers.get('www-authenticate')).toMatch(/invalid_token/);
    await services.runtime.audit.drain();
    const { rows } = await pool.query<{ type: string; outcome: string; data: Record<string, unknown> }>(
      `SELECT type, outcome, data FROM audit_events WHERE task_id = $1 AND type LIKE 'gateway.%' ORDER BY seq`,
      [taskId],
    );
    expect(rows.map((row) => `${row.type}:${row.outcome}`)).toEqual(['gateway.call:success', 'gateway.upstream:failure']);
    expect(rows[1].data).toMatchObject({ status: 401, error: 'invalid_token', reason: 'revoked' });
  });

  it('sends nothing again, and answers 503 with Retry-After, when the credential cannot be read again', async () => {
    const subject = 'user-outage';
    await connected(subject);
    const credential = await credentialForUser(services, orchestrator, agent, { issuer: IDP, subject, key: idp.key }, ALLOWED);
    const before = received.length;
    const arrived = new Promise<void>((resolve) => (refreshArrived = resolve));
    const call = http(`${services.gatewayUrl}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${credential}` } });
    await arrived;
    // From now on the credential's state cannot be read (the rest of the database answers).
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    const textOf = (statement: unknown) => (typeof statement === 'string' ? statement : ((statement as { text?: string } | undefined)?.text ?? ''));
    Object.assign(pool, {
      query: (statement: unknown, ...rest: unknown[]): unknown =>
        textOf(statement).includes('task_expires_at_ms') ? Promise.reject(new Error('Connection terminated unexpectedly')) : query(statement, ...rest),
    });
    try {
      answerRefresh(held.shift()!);
      const answer = await call;
      expect([answer.status, answer.body.error]).toEqual([503, 'temporarily_unavailable']);
      expect(answer.headers.get('retry-after')).not.toBeNull();
      expect(received.length).toBe(before + 1);
    } finally {
      Object.assign(pool, { query });
    }
  });

  it("sends nothing when the task ends while the call waits for another instance's refresh lease", async () => {
    const subject = 'user-leased';
    await connected(subject, true);
    // Another instance holds the account's refresh lease: the call waits for its outcome.
    await pool.query(
      `UPDATE connected_accounts SET refresh_lease_holder = gen_random_uuid(), refresh_lease_expires_at = now() + interval '30 seconds'
        WHERE user_issuer = $1 AND user_subject = $2`,
      [IDP, subject],
    );
    const credential = await credentialForUser(services, orchestrator, agent, { issuer: IDP, subject, key: idp.key }, ALLOWED);
    const taskId = JSON.parse(Buffer.from(credential.split('.')[1], 'base64url').toString()).task_id as string;
    const before = received.length;
    const call = http(`${services.gatewayUrl}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${credential}` } });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const ended = await sendJson('POST', `${services.issuer}/v1/tasks/${taskId}/complete`, undefined, await tasksToken(services, orchestrator));
    expect(ended.status).toBe(200);
    // The other instance stores its refreshed token and frees the lease: the waiting call goes on with it.
    const refreshed = services.runtime.masterKey.seal(
      JSON.stringify({ access_token: `refreshed_${randomUUID()}`, refresh_token: `rt_${randomUUID()}` }),
      accountSealContext('codehost', tokenUrl, { issuer: IDP, subject }),
    );
    await pool.query(
      `UPDATE connected_accounts SET tokens_sealed = $3, access_expires_at = now() + interval '1 hour', refresh_lease_holder = NULL, refresh_lease_expires_at = NULL
        WHERE user_issuer = $1 AND user_subject = $2`,
      [IDP, subject, refreshed],
    );
    const answer = await call;
    expect([answer.status, answer.body.error]).toEqual([401, 'invalid_token']);
    expect(received.length).toBe(before);
  });

  it('still sends again when the task is live (the refreshed token is used)', async () => {
    const subject = 'user-live';
    await connected(subject);
    const credential = await credentialForUser(services, orchestrator, agent, { issuer: IDP, subject, key: idp.key }, ALLOWED);
    const before = received.length;
    const arrived = new Promise<void>((resolve) => (refreshArrived = resolve));
    const call = http(`${services.gatewayUrl}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${credential}` } });
    await arrived;
    answerRefresh(held.shift()!);
    const answer = await call;
    expect([answer.status, answer.body]).toEqual([200, { login: 'octocat' }]);
    expect(received.length).toBe(before + 2);
  });
});
