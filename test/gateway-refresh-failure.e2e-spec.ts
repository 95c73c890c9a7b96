import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CryptoKey } from 'jose';
import type { Pool } from 'pg';
import { accountSealContext } from '@writ/accounts';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { credentialForUser, startIdentityProvider } from './support/grant-flow';
import { http, type TestClient } from './support/oauth-client';
import { seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const OPERATIONS = [{ name: 'me.get', method: 'GET', path: '/api/me', risk: 'read', constraints: {} }];
const ALLOWED = [{ type: 'connector', connector: 'codehost', actions: ['me.get'] }];
const IDP = 'https://idp.refresh.example';

/**
 * An upstream refuses the user's access token (401) and the gateway refreshes it once to resend:
 * when that refresh fails (the token endpoint down, or the grant revoked), the call is answered
 * with the status and reason the same failure gets on the first send (503 with Retry-After,
 * 403 connection_required), not as the upstream's 502.
 */
describe('gateway: a failed credential refresh on the resend after an upstream 401', () => {
  let services: TestServices;
  let pool: Pool;
  let agent: TestClient;
  let orchestrator: TestClient;
  let idp: { key: CryptoKey; close: () => Promise<void> };
  let upstream: Server;
  let tokenEndpoint: Server;
  let tokenUrl: string;
  /**
   * How the token endpoint answers a refresh: `down` drops the connection, `revoked` is
   * invalid_grant, `maintenance` a 503 page, `busy` a 503 `temporarily_unavailable` OAuth error.
   */
  let tokenMode: 'down' | 'revoked' | 'maintenance' | 'busy' = 'down';
  let upstreamCalls = 0;

  const listen = async (server: Server) => {
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };

  beforeAll(async () => {
    services = await startTestServices({ gateway: createGatewayApp, env: { WRIT_DB_LOCK_TIMEOUT_MS: '300' } });
    pool = services.runtime.pool;
    agent = await seedAgent(pool, 'agent-1');
    orchestrator = await seedOrchestrator(pool, 'orch-1', ['agent-1']);
    idp = await startIdentityProvider(pool, IDP);
    // The upstream API refuses every access token: the gateway refreshes once and resends.
    upstream = createServer((req, res) => {
      upstreamCalls += 1;
      req.resume();
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
      res.end();
    });
    const upstreamUrl = await listen(upstream);
    tokenEndpoint = createServer((req, res) => {
      req.resume();
      if (tokenMode === 'down') {
        req.socket.destroy();
        return;
      }
      if (tokenMode === 'maintenance') {
        res.writeHead(503, { 'content-type': 'text/html' });
        res.end('<h1>Down for maintenance</h1>');
        return;
      }
      res.writeHead(tokenMode === 'busy' ? 503 : 400, { 'content-type': 'application/json' });
      res.end(JSON.stringify(tokenMode === 'busy' ? { error: 'temporarily_unavailable' } : { error: 'invalid_grant', error_description: 'grant revoked' }));
    });
    tokenUrl = `${await listen(tokenEndpoint)}/token`;
    await seedConnector(pool, 'codehost', OPERATIONS, upstreamUrl);
    await setConnectorCredential(pool, services.runtime.masterKey, 'codehost', {
      type: 'oauth2_authorization_code',
      authorization_url: `${tokenUrl.replace(/\/token$/, '')}/auth`,
      token_url: tokenUrl,
      client_id: 'writ-upstream',
      client_secret: 'upstream-secret-0a9f',
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

  /** A connected account for `subject`, its access token expired (refreshed before the first send) or not. */
  async function connected(subject: string, expired: boolean): Promise<void> {
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

  async function callAs(subject: string) {
    const credential = await credentialForUser(services, orchestrator, agent, { issuer: IDP, subject, key: idp.key }, ALLOWED);
    return http(`${services.gatewayUrl}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${credential}` } });
  }

  const lastGatewayEvent = async () =>
    (
      await pool.query<{ type: string; data: Record<string, unknown> }>(
        `SELECT type, data FROM audit_events WHERE type IN ('gateway.call', 'gateway.upstream') ORDER BY seq DESC LIMIT 1`,
      )
    ).rows[0];

  it('token endpoint down: 503 with Retry-After on the resend, as on the first send', async () => {
    tokenMode = 'down';
    await connected('first-down', true);
    const first = await callAs('first-down');
    expect(first.status).toBe(503);
    const firstEvent = await lastGatewayEvent();
    expect(firstEvent.data).toMatchObject({ status: 503, reason: 'upstream_unavailable' });

    await connected('resend-down', false);
    const before = upstreamCalls;
    const resend = await callAs('resend-down');
    expect(upstreamCalls).toBe(before + 1);
    expect(resend.status).toBe(first.status);
    expect(resend.body.error).toBe('temporarily_unavailable');
    expect(resend.body.error).toBe(first.body.error);
    expect(Number(resend.headers.get('retry-after'))).toBeGreaterThan(0);
    const resendEvent = await lastGatewayEvent();
    expect(resendEvent.data).toMatchObject({ status: 503, error: 'temporarily_unavailable', reason: firstEvent.data.reason });
  });

  it('grant revoked: 403 connection_required on the resend, as on the first send', async () => {
    tokenMode = 'revoked';
    await connected('first-revoked', true);
    const first = await callAs('first-revoked');
    expect(first.status).toBe(403);
    expect(first.body.error).toBe('connection_required');
    const firstEvent = await lastGatewayEvent();
    expect(firstEvent.data).toMatchObject({ status: 403, reason: 'connection_broken' });

    await connected('resend-revoked', false);
    const resend = await callAs('resend-revoked');
    expect(resend.status).toBe(403);
    expect(resend.body.error).toBe('connection_required');
    const resendEvent = await lastGatewayEvent();
    expect(resendEvent.data).toMatchObject({ status: 403, error: 'connection_required', reason: firstEvent.data.reason });
    const { rows } = await pool.query<{ status: string }>(`SELECT status FROM connected_accounts WHERE user_subject = 'resend-revoked'`);
    expect(rows[0].status).toBe('broken');
  });

  it.each(['maintenance', 'busy'] as const)(
    'token endpoint answering 503 (%s): the call is 503 with Retry-After and the connection stays active',
    async (mode) => {
      tokenMode = mode;
      for (const [subject, expired] of [
        [`first-${mode}`, true],
        [`resend-${mode}`, false],
      ] as const) {
        await connected(subject, expired);
        const response = await callAs(subject);
        expect(response.status).toBe(503);
        expect(response.body.error).toBe('temporarily_unavailable');
        expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
        const { rows } = await pool.query<{ status: string }>(`SELECT status FROM connected_accounts WHERE user_subject = $1`, [subject]);
        expect(rows[0].status).toBe('active');
      }
    },
  );

  it('database out of reach for the refresh (its row lock times out): 503 on the resend, as on the first send', async () => {
    tokenMode = 'down';
    const statuses: number[] = [];
    for (const [subject, expired] of [
      ['first-locked', true],
      ['resend-locked', false],
    ] as const) {
      await connected(subject, expired);
      // Another session holds the connection's row: the refresh's SELECT ... FOR UPDATE passes lock_timeout.
      const holder = await pool.connect();
      try {
        await holder.query('BEGIN');
        await holder.query(`SELECT id FROM connected_accounts WHERE user_subject = $1 FOR UPDATE`, [subject]);
        const response = await callAs(subject);
        statuses.push(response.status);
        expect(response.body.error).toBe('temporarily_unavailable');
        expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
      } finally {
        await holder.query('ROLLBACK');
        holder.release();
      }
    }
    expect(statuses).toEqual([503, 503]);
  });
});
