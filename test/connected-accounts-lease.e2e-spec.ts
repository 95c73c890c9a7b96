import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CryptoKey } from 'jose';
import type { Pool } from 'pg';
import { accountSealContext, ConnectedAccounts } from '@writ/accounts';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { undocumentedEventMembers } from './support/audit-docs';
import { eventually } from './support/eventually';
import { sample, scrape } from './support/metrics';
import { credentialForUser, startIdentityProvider } from './support/grant-flow';
import { http, sendJson, type TestClient, type TestResponse } from './support/oauth-client';
import { seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const OPERATIONS = [{ name: 'me.get', method: 'GET', path: '/api/me', risk: 'read', constraints: {} }];
const ALLOWED = [{ type: 'connector', connector: 'codehost', actions: ['me.get'] }];
const IDP = 'https://idp.lease.example';

/**
 * A provider whose token endpoint rotates one-use refresh tokens (a consumed one is
 * `invalid_grant`) and can hold its answers open, or answer 503; with an RFC 7009 revocation
 * endpoint and the API the connector calls (`/api/me`, which accepts the access tokens it issued).
 */
interface MockProvider {
  url: string;
  /** `hold`: refreshes are decided when they arrive and answered on {@link release}. */
  mode: 'answer' | 'hold' | 'unavailable';
  /** The raw JSON of `expires_in` in refresh answers (`undefined`: none given). */
  expiresIn: string | undefined;
  /** The API refuses every access token (401), as a misbehaving or hostile upstream may. */
  refusesEveryToken: boolean;
  /** `unavailable`'s status (503 or 429) and `Retry-After` value (`undefined`: none sent). */
  unavailableStatus: number;
  retryAfter: string | undefined;
  refreshRequests: number;
  /** The access tokens the API (`/api/me`) was called with, in order. */
  apiTokens: string[];
  held: number;
  /** Tokens revoked at the revocation endpoint, in order. */
  revoked: string[];
  /** The tokens each refresh issued, in order. */
  issued: Array<{ access_token: string; refresh_token: string }>;
  /** Registers a refresh token and an access token of `subject` (as if issued at connect time). */
  grant(subject: string, accessToken: string, refreshToken: string): void;
  release(): void;
  close(): Promise<void>;
}

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function startProvider(): Promise<MockProvider> {
  const refreshTokens = new Map<string, string>();
  const accessTokens = new Map<string, string>();
  let releases: Array<() => void> = [];
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };
  const form = async (req: IncomingMessage) => {
    let text = '';
    for await (const chunk of req) text += String(chunk);
    return new URLSearchParams(text);
  };
  const provider: MockProvider = {
    url: '',
    mode: 'answer',
    expiresIn: '3600',
    refusesEveryToken: false,
    unavailableStatus: 503,
    retryAfter: undefined,
    refreshRequests: 0,
    apiTokens: [],
    held: 0,
    revoked: [],
    issued: [],
    grant(subject, accessToken, refreshToken) {
      refreshTokens.set(refreshToken, subject);
      accessTokens.set(accessToken, subject);
    },
    release() {
      const pending = releases;
      releases = [];
      for (const answer of pending) answer();
    },
    close: async () => {
      provider.release();
      server.closeAllConnections();
      server.close();
    },
  };
  const server = createServer((req, res) => {
    void (async () => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/api/me') {
        const presented = (req.headers.authorization ?? '').replace(/^Bearer /, '');
        provider.apiTokens.push(presented);
        const subject = accessTokens.get(presented);
        req.resume();
        if (!subject || provider.refusesEveryToken) {
          res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
          res.end();
          return;
        }
        json(res, 200, { account: subject });
        return;
      }
      const fields = await form(req);
      if (path === '/revoke') {
        const token = fields.get('token') ?? '';
        provider.revoked.push(token);
        refreshTokens.delete(token);
        accessTokens.delete(token);
        res.writeHead(200);
        res.end();
        return;
      }
      if (path !== '/token' || fields.get('grant_type') !== 'refresh_token') return json(res, 400, { error: 'unsupported_grant_type' });
      provider.refreshRequests += 1;
      if (provider.mode === 'unavailable') {
        if (provider.retryAfter !== undefined) res.setHeader('retry-after', provider.retryAfter);
        return json(res, provider.unavailableStatus, { error: 'temporarily_unavailable' });
      }
      // Decided on arrival (the refresh token consumed then), answered now or on release.
      const presented = fields.get('refresh_token') ?? '';
      const subject = refreshTokens.get(presented);
      let answer: () => void;
      if (subject === undefined) {
        answer = () => json(res, 400, { error: 'invalid_grant', error_description: 'refresh token unknown, used or revoked' });
      } else {
        refreshTokens.delete(presented);
        const issued = { access_token: `at_${subject}_${randomUUID()}`, refresh_token: `rt_${subject}_${randomUUID()}` };
        refreshTokens.set(issued.refresh_token, subject);
        accessTokens.set(issued.access_token, subject);
        provider.issued.push(issued);
        const body = JSON.stringify({ ...issued, token_type: 'Bearer', scope: 'repo:read' });
        const expiresIn = provider.expiresIn;
        answer = () => {
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
          res.end(expiresIn === undefined ? body : `${body.slice(0, -1)},"expires_in":${expiresIn}}`);
        };
      }
      if (provider.mode === 'hold') {
        provider.held += 1;
        releases.push(answer);
      } else answer();
    })();
  });
  provider.url = await listen(server);
  return provider;
}

/**
 * The refresh of a user's upstream token is a lease on the account row, not a row lock held
 * across the provider's HTTP call: while a refresh waits at the provider no transaction is open
 * for it and a disconnect completes at once (and wins: the tokens fetched are never stored, and
 * are revoked); two gateway instances make one refresh between them; a lease left behind by a
 * crashed holder is taken over; a live one is never doubled; a provider 503 is the agent's 503.
 */
describe('connected accounts: the refresh lease', () => {
  let first: TestServices;
  let second: TestServices;
  let pool: Pool;
  let provider: MockProvider;
  let agent: TestClient;
  let orchestrator: TestClient;
  let idp: { key: CryptoKey; close: () => Promise<void> };
  let tokenUrl: string;

  const secondGateway = () => `http://127.0.0.1:${second.apps[second.apps.length - 1].getHttpServer().address().port}`;

  beforeAll(async () => {
    provider = await startProvider();
    // A short lock_timeout: on a row-locking refresh, a disconnect gives up (503) instead of waiting for the provider.
    first = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp, env: { WRIT_DB_LOCK_TIMEOUT_MS: '1500' } });
    second = await startSecondInstance(first, { gateway: createGatewayApp, env: { WRIT_DB_LOCK_TIMEOUT_MS: '1500' } });
    pool = first.runtime.pool;
    agent = await seedAgent(pool, 'agent-1');
    orchestrator = await seedOrchestrator(pool, 'orch-1', ['agent-1']);
    idp = await startIdentityProvider(pool, IDP);
    tokenUrl = `${provider.url}/token`;
    await seedConnector(pool, 'codehost', OPERATIONS, provider.url);
    await setConnectorCredential(pool, first.runtime.masterKey, 'codehost', {
      type: 'oauth2_authorization_code',
      authorization_url: `${provider.url}/auth`,
      token_url: tokenUrl,
      revocation_url: `${provider.url}/revoke`,
      client_id: 'writ-upstream',
      client_secret: 'upstream-secret-lease-77d1',
      scopes: ['repo:read'],
    });
  });
  afterAll(async () => {
    await provider?.close();
    await idp?.close();
    await second?.close();
    await first?.close();
  });

  afterEach(() => {
    provider.mode = 'answer';
    provider.expiresIn = '3600';
    provider.refusesEveryToken = false;
    provider.unavailableStatus = 503;
    provider.retryAfter = undefined;
    provider.release();
  });

  /**
   * A connected account for `subject` whose access token expires in `expiresIn` seconds
   * (negative: expired); `refreshToken: false`, as a provider that issued none (its refresh
   * token then exists at the provider only, never stored).
   */
  async function connected(
    subject: string,
    expiresIn: number,
    options: { refreshToken?: boolean } = {},
  ): Promise<{ id: string; accessToken: string; refreshToken: string }> {
    const accessToken = `at_${subject}_${randomUUID()}`;
    const refreshToken = `rt_${subject}_${randomUUID()}`;
    provider.grant(subject, accessToken, refreshToken);
    const id = randomUUID();
    const tokens = options.refreshToken === false ? { access_token: accessToken } : { access_token: accessToken, refresh_token: refreshToken };
    await pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, access_expires_at)
       VALUES ($1, 'codehost', $2, $3, 'active', '{repo:read}', $4, now() + make_interval(secs => $5))`,
      [id, IDP, subject, sealFor(subject, tokens), expiresIn],
    );
    return { id, accessToken, refreshToken };
  }

  function sealFor(subject: string, tokens: { access_token: string; refresh_token?: string }): Buffer {
    return first.runtime.masterKey.seal(JSON.stringify(tokens), accountSealContext('codehost', tokenUrl, { issuer: IDP, subject }));
  }

  async function stored(subject: string) {
    const { rows } = await pool.query<{ status: string; tokens_sealed: Buffer; refresh_lease_holder: string | null; access_expires_at: Date | null }>(
      `SELECT status, tokens_sealed, refresh_lease_holder, access_expires_at FROM connected_accounts WHERE connector_id = 'codehost' AND user_subject = $1`,
      [subject],
    );
    const row = rows[0];
    if (!row) return undefined;
    const context = accountSealContext('codehost', tokenUrl, { issuer: IDP, subject });
    return { ...row, tokens: JSON.parse(first.runtime.masterKey.unseal(row.tokens_sealed, context).toString('utf8')) as { access_token: string } };
  }

  /** A gateway credential of a fresh task acting for `subject`. */
  function credentialFor(subject: string): Promise<string> {
    return credentialForUser(first, orchestrator, agent, { issuer: IDP, subject, key: idp.key }, ALLOWED);
  }

  const callMe = (credential: string, gateway = first.gatewayUrl): Promise<TestResponse> =>
    http(`${gateway}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${credential}` } });

  const disconnectAsAdmin = (id: string) => sendJson('DELETE', `${first.adminUrl}/v1/connections/${id}`, undefined, first.adminToken);

  /** Calls with `credential` and resolves, with the call still pending, once the provider holds its refresh open. */
  async function heldAtProvider(credential: string, gateway = first.gatewayUrl): Promise<{ pending: Promise<TestResponse> }> {
    provider.mode = 'hold';
    const held = provider.held;
    const pending = callMe(credential, gateway);
    await eventually(
      () => provider.held,
      (count) => count > held,
    );
    return { pending };
  }

  /** Sessions of this database holding a transaction open while idle, and any lock they hold on `connected_accounts`. */
  async function idleTransactionsOnAccounts(): Promise<Array<{ pid: number; query: string }>> {
    const { rows } = await pool.query<{ pid: number; query: string }>(
      `SELECT DISTINCT a.pid, a.query FROM pg_stat_activity a
         LEFT JOIN pg_locks l ON l.pid = a.pid AND l.relation = 'connected_accounts'::regclass
        WHERE a.datname = current_database() AND a.state LIKE 'idle in transaction%'
          AND (l.pid IS NOT NULL OR a.query ILIKE '%connected_accounts%')`,
    );
    return rows;
  }

  it("never calls with another user's account after the DBA moves a task or a credential to that user (row integrity)", async () => {
    await connected('victim', 3600);
    await connected('attacker', 3600);
    const taskOf = (credential: string) => (JSON.parse(Buffer.from(credential.split('.')[1], 'base64url').toString()) as { task_id: string }).task_id;
    // The task's user set to the victim by hand: its tag no longer verifies, the task stands as gone.
    const moved = await credentialFor('attacker');
    await pool.query(`UPDATE tasks SET user_subject = 'victim' WHERE id = $1`, [taskOf(moved)]);
    const refused = await callMe(moved);
    expect(refused.status).toBe(401);
    expect(refused.text).not.toContain('victim');
    // The credential's row pointed at the victim's own (honest) task: not the task it was signed for.
    const victims = await credentialFor('victim');
    const attackers = await credentialFor('attacker');
    await pool.query(`UPDATE access_tokens SET task_id = $2 WHERE task_id = $1`, [taskOf(attackers), taskOf(victims)]);
    const repointed = await callMe(attackers);
    expect(repointed.status).toBe(401);
    expect(repointed.text).not.toContain('victim');
    // The victim's own credential still works.
    expect((await callMe(victims)).body).toEqual({ account: 'victim' });
  });

  it('(a) while a refresh waits at the provider no transaction is open for it, and an admin disconnect completes at once', async () => {
    const account = await connected('held', -60);
    const credential = await credentialFor('held');
    const held = provider.held;
    const { pending } = await heldAtProvider(credential);
    expect(provider.held).toBe(held + 1);
    expect(await idleTransactionsOnAccounts()).toEqual([]);
    // The lease is visible on the row, and nothing else about the account is locked.
    expect((await stored('held'))?.refresh_lease_holder).toEqual(expect.any(String));

    const disconnected = await disconnectAsAdmin(account.id);
    // Answered while the provider still holds the refresh open.
    expect(provider.held).toBe(held + 1);
    expect(disconnected.status).toBe(200);
    expect(disconnected.body).toMatchObject({ id: account.id, upstream_revocation: 'revoked' });

    provider.release();
    const response = await pending;
    expect(response.status).toBe(403);
    expect(response.body.error).toBe('connection_required');
  });

  it('(b) parallel calls on two instances needing a refresh make exactly one refresh request', async () => {
    await connected('racer', -60);
    const credentials = await Promise.all([0, 1, 2, 3, 4, 5].map(() => credentialFor('racer')));
    const before = provider.refreshRequests;
    // Held until every call is in: the first refresh is still open at the provider while the others arrive.
    provider.mode = 'hold';
    const pending = Promise.all(credentials.map((credential, index) => callMe(credential, index % 2 === 0 ? first.gatewayUrl : secondGateway())));
    await eventually(
      () => provider.refreshRequests,
      (count) => count > before,
    );
    provider.mode = 'answer';
    provider.release();
    const responses = await pending;
    expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200, 200]);
    for (const response of responses) expect(response.body.account).toBe('racer');
    expect(provider.refreshRequests).toBe(before + 1);
    const after = await stored('racer');
    expect(after?.tokens.access_token).toBe(provider.issued[provider.issued.length - 1].access_token);
    expect(after?.refresh_lease_holder).toBeNull();
  });

  it('(c) a disconnect during the held refresh wins: the fetched tokens are not stored but revoked, and the calls are refused', async () => {
    const account = await connected('leaver', -60);
    const [credential, next] = [await credentialFor('leaver'), await credentialFor('leaver')];
    const issued = provider.issued.length;
    const { pending } = await heldAtProvider(credential, secondGateway());
    expect((await disconnectAsAdmin(account.id)).status).toBe(200);
    provider.release();
    const response = await pending;
    expect(response.status).toBe(403);
    expect(response.body.error).toBe('connection_required');
    expect(response.body.error_description).toMatch(/has not connected an account/);

    const fetched = provider.issued[issued];
    expect(fetched).toBeDefined();
    expect(await stored('leaver')).toBeUndefined();
    // The grant the refresh brought back is revoked at the provider (the rotated refresh token).
    await eventually(
      () => provider.revoked,
      (revoked) => revoked.includes(fetched.refresh_token),
    );
    expect(provider.revoked).toContain(fetched.refresh_token);
    const { rows } = await pool.query<{ type: string; outcome: string; data: Record<string, unknown> }>(
      `SELECT type, outcome, data FROM audit_events WHERE type = 'connection.refresh_discarded' ORDER BY seq DESC LIMIT 1`,
    );
    expect(rows[0]).toMatchObject({ outcome: 'denied', data: { connection_id: account.id, upstream_revocation: 'revoked' } });
    expect(JSON.stringify(rows)).not.toContain(fetched.access_token);
    expect(JSON.stringify(rows)).not.toContain(fetched.refresh_token);

    const after = await callMe(next);
    expect(after.status).toBe(403);
    expect(after.body.error).toBe('connection_required');
    expect(after.body.error_description).toMatch(/has not connected an account/);
  });

  it('a reconnect during the held refresh wins: the fetched tokens are not stored, the new connection is not revoked', async () => {
    const account = await connected('returning', -60);
    const credential = await credentialFor('returning');
    const issued = provider.issued.length;
    const { pending } = await heldAtProvider(credential);
    // The user connects again meanwhile (what the callback's upsert does): new tokens, the lease cleared.
    const reconnect = { access_token: `at_returning_${randomUUID()}`, refresh_token: `rt_returning_${randomUUID()}` };
    provider.grant('returning', reconnect.access_token, reconnect.refresh_token);
    await pool.query(
      `UPDATE connected_accounts SET tokens_sealed = $2, access_expires_at = now() + interval '1 hour', connected_at = now(), refreshed_at = NULL,
              refresh_lease_holder = NULL, refresh_lease_expires_at = NULL WHERE id = $1`,
      [account.id, sealFor('returning', reconnect)],
    );
    provider.release();
    const response = await pending;
    expect(response.status).toBe(503);
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    const fetched = provider.issued[issued];
    expect((await stored('returning'))?.tokens.access_token).toBe(reconnect.access_token);
    expect(provider.revoked).not.toContain(fetched.refresh_token);
    const { rows } = await pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'connection.refresh_discarded' ORDER BY seq DESC LIMIT 1`,
    );
    expect(rows[0].data).toMatchObject({ connection_id: account.id, reason: 'reconnected during the refresh' });
    const next = await callMe(await credentialFor('returning'));
    expect(next.status).toBe(200);
    expect(next.body.account).toBe('returning');
  });

  it('PostgreSQL out of reach just after the provider rotated the refresh token: the tokens are stored once it is back', async () => {
    const account = await connected('rotated', -60);
    const [credential, next] = [await credentialFor('rotated'), await credentialFor('rotated')];
    const { pending } = await heldAtProvider(credential);
    // Another session holds the account's row: storing the refresh passes lock_timeout, as with PostgreSQL out of reach.
    const blocker = await pool.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT id FROM connected_accounts WHERE id = $1 FOR UPDATE', [account.id]);
      provider.release();
      const response = await pending;
      expect(response.status).toBe(503);
      expect(response.body.error).toBe('temporarily_unavailable');
    } finally {
      await blocker.query('ROLLBACK');
      blocker.release();
    }
    // The provider consumed the old refresh token: the rotated one is stored once PostgreSQL is back.
    const issued = provider.issued[provider.issued.length - 1];
    expect(
      (
        await eventually(
          () => stored('rotated'),
          (row) => row?.tokens.access_token === issued.access_token,
        )
      )?.tokens,
    ).toMatchObject(issued);
    const requests = provider.refreshRequests;
    const after = await callMe(next);
    expect(after.status).toBe(200);
    expect(after.body.account).toBe('rotated');
    expect(provider.refreshRequests).toBe(requests);
    expect((await stored('rotated'))?.refresh_lease_holder).toBeNull();
    const events = await pool.query(`SELECT count(*)::int AS n FROM audit_events WHERE type = 'connection.refreshed' AND data->>'connection_id' = $1`, [
      account.id,
    ]);
    expect(events.rows[0].n).toBe(1);
  });

  it('(d) a lease left behind by a crashed holder is taken over', async () => {
    const account = await connected('orphan', -60);
    await pool.query(`UPDATE connected_accounts SET refresh_lease_holder = $2, refresh_lease_expires_at = now() - interval '1 second' WHERE id = $1`, [
      account.id,
      randomUUID(),
    ]);
    const before = provider.refreshRequests;
    const response = await callMe(await credentialFor('orphan'));
    expect(response.status).toBe(200);
    expect(response.body.account).toBe('orphan');
    expect(provider.refreshRequests).toBe(before + 1);
    expect((await stored('orphan'))?.refresh_lease_holder).toBeNull();
    const { rows } = await pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'connection.refreshed' ORDER BY seq DESC LIMIT 1`,
    );
    expect(rows[0].data).toMatchObject({ connection_id: account.id, lease_taken_over: true });
  });

  it('a live lease of another caller is never doubled: a still valid access token is used meanwhile', async () => {
    // Inside the refresh margin (30 s), not expired: the holder is refreshing, this call uses the token as it is.
    const account = await connected('patient', 10);
    await pool.query(`UPDATE connected_accounts SET refresh_lease_holder = $2, refresh_lease_expires_at = now() + interval '1 minute' WHERE id = $1`, [
      account.id,
      randomUUID(),
    ]);
    const before = provider.refreshRequests;
    const response = await callMe(await credentialFor('patient'));
    expect(response.status).toBe(200);
    expect(response.body.account).toBe('patient');
    expect(provider.refreshRequests).toBe(before);
  });

  it("a live lease of another caller is never doubled: an expired token waits for the holder's tokens", async () => {
    const account = await connected('waiter', -60);
    const holder = randomUUID();
    await pool.query(`UPDATE connected_accounts SET refresh_lease_holder = $2, refresh_lease_expires_at = now() + interval '1 minute' WHERE id = $1`, [
      account.id,
      holder,
    ]);
    const credential = await credentialFor('waiter');
    const before = provider.refreshRequests;
    const pending = callMe(credential, secondGateway());
    // Not an assertion on time: leaves the call the moment to find the lease before the holder stores.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const fresh = { access_token: `at_waiter_${randomUUID()}`, refresh_token: `rt_waiter_${randomUUID()}` };
    provider.grant('waiter', fresh.access_token, fresh.refresh_token);
    // The other holder stores its refresh, as `refreshHeld` does.
    const storedByHolder = await pool.query(
      `UPDATE connected_accounts SET tokens_sealed = $3, access_expires_at = now() + interval '1 hour', refresh_lease_holder = NULL, refresh_lease_expires_at = NULL
        WHERE id = $1 AND refresh_lease_holder = $2`,
      [account.id, holder, sealFor('waiter', fresh)],
    );
    expect(storedByHolder.rowCount).toBe(1);
    const response = await pending;
    expect(response.status).toBe(200);
    expect(response.body.account).toBe('waiter');
    expect(provider.refreshRequests).toBe(before);
  });

  it('(e) provider 503: the agent gets 503 with Retry-After, the account stays connected and its lease is released', async () => {
    await connected('outage', -60);
    provider.mode = 'unavailable';
    const responses = await Promise.all([first.gatewayUrl, secondGateway()].map(async (gateway) => callMe(await credentialFor('outage'), gateway)));
    for (const response of responses) {
      expect(response.status).toBe(503);
      expect(response.body.error).toBe('temporarily_unavailable');
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    const after = await stored('outage');
    expect(after).toMatchObject({ status: 'active', refresh_lease_holder: null });
    const { rows } = await pool.query<{ outcome: string; data: Record<string, unknown> }>(
      `SELECT outcome, data FROM audit_events WHERE type = 'connection.refresh_failed' ORDER BY seq DESC LIMIT 1`,
    );
    expect(rows[0]).toMatchObject({ outcome: 'error', data: { status: 'active' } });

    // The provider back within the backoff (5 s at first): the next call waits for it, the
    // provider is not asked (the price of not asking a struggling provider on every call).
    provider.mode = 'answer';
    const requests = provider.refreshRequests;
    const waiting = await callMe(await credentialFor('outage'));
    expect(waiting.status).toBe(503);
    expect(waiting.body.error_description).toMatch(/was unavailable at the last refresh .*: it is not asked again for \d+ s/);
    expect(Number(waiting.headers.get('retry-after'))).toBeLessThanOrEqual(5);
    expect(provider.refreshRequests).toBe(requests);
    // The backoff over (moved back by PostgreSQL's clock, as waiting would): the next call refreshes.
    await pool.query(`UPDATE connected_accounts SET refresh_retry_at = now() WHERE user_subject = 'outage'`);
    const recovered = await callMe(await credentialFor('outage'));
    expect(recovered.status).toBe(200);
    expect(recovered.body.account).toBe('outage');
    expect(provider.refreshRequests).toBe(requests + 1);
  });

  it('a refused refresh token (invalid_grant) marks the account for reconnection, its lease released', async () => {
    const account = await connected('revoked', -60);
    // The grant is gone at the provider.
    await http(`${provider.url}/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: account.refreshToken }).toString(),
    });
    const response = await callMe(await credentialFor('revoked'));
    expect(response.status).toBe(403);
    expect(response.body.error).toBe('connection_required');
    expect(response.body.error_description).toMatch(/broken \(the upstream answered invalid_grant/);
    expect(await stored('revoked')).toMatchObject({ status: 'broken', refresh_lease_holder: null });
  });

  /** `count` calls with `credential`, alternating between the two gateway instances, all started at once. */
  const inParallel = (credential: string, count: number) =>
    Promise.all(Array.from({ length: count }, (_, index) => callMe(credential, index % 2 === 0 ? first.gatewayUrl : secondGateway())));

  /** `count` calls with `credential`, one after the other, alternating between the two instances. */
  async function inSequence(credential: string, count: number): Promise<TestResponse[]> {
    const responses: TestResponse[] = [];
    for (let index = 0; index < count; index += 1) responses.push(await callMe(credential, index % 2 === 0 ? first.gatewayUrl : secondGateway()));
    return responses;
  }

  describe('upstream token lifetimes: a provider cannot turn every call into a refresh', () => {
    it.each(['0', '1', '29', '"0"'])(
      'expires_in %s: 8 parallel and 8 sequential calls on two instances make one refresh, and all succeed',
      async (expiresIn) => {
        const subject = `short-${Buffer.from(expiresIn).toString('hex')}`;
        await connected(subject, -60);
        provider.expiresIn = expiresIn;
        const credential = await credentialFor(subject);
        const before = provider.refreshRequests;
        const parallel = await inParallel(credential, 8);
        const sequential = await inSequence(credential, 8);
        expect([...parallel, ...sequential].map((response) => response.status)).toEqual(new Array(16).fill(200));
        expect(provider.refreshRequests).toBe(before + 1);
        // Believed a minute (MIN_UPSTREAM_TOKEN_SECONDS): used for 30 s at least before the next refresh.
        const after = await stored(subject);
        expect(after?.access_expires_at?.getTime()).toBeGreaterThan(Date.now() + 25_000);
      },
    );

    it('expires_in over a day: believed a day, a valid date', async () => {
      await connected('long-lived', -60);
      provider.expiresIn = '1e300';
      const responses = await inSequence(await credentialFor('long-lived'), 3);
      expect(responses.map((response) => response.status)).toEqual([200, 200, 200]);
      const expiry = (await stored('long-lived'))?.access_expires_at?.getTime() ?? 0;
      expect(expiry).toBeGreaterThan(Date.now() + 23 * 3600_000);
      expect(expiry).toBeLessThanOrEqual(Date.now() + 24 * 3600_000);
    });

    it('no expires_in: no expiry known, no refresh until the upstream refuses the token', async () => {
      await connected('unknown-lifetime', -60);
      provider.expiresIn = undefined;
      const credential = await credentialFor('unknown-lifetime');
      const before = provider.refreshRequests;
      const responses = [...(await inParallel(credential, 4)), ...(await inSequence(credential, 4))];
      expect(responses.map((response) => response.status)).toEqual(new Array(8).fill(200));
      expect(provider.refreshRequests).toBe(before + 1);
      expect((await stored('unknown-lifetime'))?.access_expires_at).toBeNull();
    });

    it.each(['-5', '"soon"'])('expires_in %s: the answer is refused, the account marked broken, and never refreshed again', async (expiresIn) => {
      const subject = `malformed-${expiresIn.replace(/\W/g, '')}`;
      await connected(subject, -60);
      provider.expiresIn = expiresIn;
      const credential = await credentialFor(subject);
      const before = provider.refreshRequests;
      const responses = [...(await inParallel(credential, 4)), ...(await inSequence(credential, 4))];
      for (const response of responses) {
        expect(response.status).toBe(403);
        expect(response.body.error).toBe('connection_required');
      }
      expect(provider.refreshRequests).toBe(before + 1);
      expect(await stored(subject)).toMatchObject({ status: 'broken', refresh_lease_holder: null });
    });

    it('an upstream refusing every token: one forced refresh per 30 s per account, the other calls 503 with Retry-After, on every instance', async () => {
      const account = await connected('refused-always', 3600);
      provider.refusesEveryToken = true;
      const credential = await credentialFor('refused-always');
      const before = provider.refreshRequests;
      // The first 401 is worth one refresh (none was forced before); its resend is refused too.
      expect((await callMe(credential)).status).toBe(401);
      expect(provider.refreshRequests).toBe(before + 1);
      const responses = [...(await inParallel(credential, 6)), ...(await inSequence(credential, 6))];
      for (const response of responses) {
        expect(response.status).toBe(503);
        expect(response.body.error).toBe('temporarily_unavailable');
        expect(response.body.error_description).toMatch(/again, less than 30 s after a refresh it forced/);
        const retryAfter = Number(response.headers.get('retry-after'));
        expect(retryAfter).toBeGreaterThan(0);
        expect(retryAfter).toBeLessThanOrEqual(30);
      }
      expect(provider.refreshRequests).toBe(before + 1);
      // Once the interval is over, a refusal is worth one refresh again, for parallel calls on both instances too.
      await pool.query(`UPDATE connected_accounts SET forced_refreshed_at = now() - interval '31 seconds' WHERE id = $1`, [account.id]);
      const later = await inParallel(credential, 6);
      // They share the one refresh (the lease), and each resends with its token, which is refused
      // too (401). A call slow enough to send that new token on its first send has it refused
      // within 30 s of the forced refresh: no second one, a 503 (a race of the calls, not a fault).
      for (const response of later) {
        expect([401, 503]).toContain(response.status);
        if (response.status === 503) expect(response.body.error_description).toMatch(/less than 30 s after a refresh it forced/);
      }
      expect(later.some((response) => response.status === 401)).toBe(true);
      expect(provider.refreshRequests).toBe(before + 2);
    });

    it('a forced refresh that fails at the provider counts too: the next refused calls do not ask it again', async () => {
      await connected('refused-and-down', 3600);
      provider.refusesEveryToken = true;
      provider.mode = 'unavailable';
      const credential = await credentialFor('refused-and-down');
      const before = provider.refreshRequests;
      const first = await callMe(credential);
      expect(first.status).toBe(503);
      expect(provider.refreshRequests).toBe(before + 1);
      const responses = [...(await inParallel(credential, 4)), ...(await inSequence(credential, 4))];
      for (const response of responses) {
        expect(response.status).toBe(503);
        expect(response.body.error_description).toMatch(/less than 30 s after a refresh it forced/);
      }
      expect(provider.refreshRequests).toBe(before + 1);
      expect(await stored('refused-and-down')).toMatchObject({ status: 'active', refresh_lease_holder: null });
    });
  });
  describe('a token due for its refresh but not expired, when the refresh fails: the call goes with it', () => {
    const taskOf = (credential: string) => (JSON.parse(Buffer.from(credential.split('.')[1], 'base64url').toString()) as { task_id: string }).task_id;
    const callEvents = async (credential: string) =>
      (
        await pool.query<{ outcome: string; data: Record<string, unknown> }>(
          `SELECT outcome, data FROM audit_events WHERE type = 'gateway.call' AND task_id = $1 ORDER BY seq`,
          [taskOf(credential)],
        )
      ).rows;
    const failedEvents = async (id: string) =>
      (
        await pool.query<{ outcome: string; data: Record<string, unknown> }>(
          `SELECT outcome, data FROM audit_events WHERE type = 'connection.refresh_failed' AND data->>'connection_id' = $1 ORDER BY seq`,
          [id],
        )
      ).rows;
    /** `writ_account_token_unrefreshed_total{connector="codehost",reason}`, summed over both instances. */
    const unrefreshed = async (reason: 'failed' | 'deferred') =>
      (sample(await scrape(first.gatewayUrl), 'writ_account_token_unrefreshed_total', { connector: 'codehost', reason }) ?? 0) +
      (sample(await scrape(secondGateway()), 'writ_account_token_unrefreshed_total', { connector: 'codehost', reason }) ?? 0);

    it('provider 500, the token 10 s from expiry: the call is forwarded with it, the failure audited and counted; so is the next, deferred', async () => {
      const account = await connected('near-expiry', 10);
      const credential = await credentialFor('near-expiry');
      provider.mode = 'unavailable';
      provider.unavailableStatus = 500;
      const before = provider.refreshRequests;
      const [failedBefore, deferredBefore] = [await unrefreshed('failed'), await unrefreshed('deferred')];
      const apiCalls = provider.apiTokens.length;

      const response = await callMe(credential);
      expect(response.status).toBe(200);
      expect(response.body).toEqual({ account: 'near-expiry' });
      expect(provider.refreshRequests).toBe(before + 1);
      expect(provider.apiTokens.slice(apiCalls)).toEqual([account.accessToken]);
      // The attempt's event, as for any transient failure, says the current token was used.
      const events = await failedEvents(account.id);
      expect(events).toEqual([{ outcome: 'error', data: expect.objectContaining({ status: 'active', consecutive_failures: 1, current_token_used: true }) }]);
      expect(JSON.stringify(events)).not.toContain(account.accessToken);
      expect(await stored('near-expiry')).toMatchObject({ status: 'active', refresh_lease_holder: null });
      expect((await stored('near-expiry'))?.tokens.access_token).toBe(account.accessToken);
      expect((await unrefreshed('failed')) - failedBefore).toBe(1);

      // The next call, during the backoff: not asked of the provider, forwarded with the token too.
      const next = await callMe(credential, secondGateway());
      expect(next.status).toBe(200);
      expect(provider.refreshRequests).toBe(before + 1);
      expect(provider.apiTokens.slice(apiCalls)).toEqual([account.accessToken, account.accessToken]);
      expect((await unrefreshed('deferred')) - deferredBefore).toBe(1);
      expect(await failedEvents(account.id)).toHaveLength(1);

      // Each call's own event says its token was due and not refreshed, and why.
      expect((await callEvents(credential)).map((event) => [event.outcome, event.data.upstream_token_unrefreshed])).toEqual([
        ['success', 'failed'],
        ['success', 'deferred'],
      ]);
      // docs/audit.md names the members these events carry.
      expect((await undocumentedEventMembers(pool)).filter((entry) => /^(gateway\.call|connection\.refresh_failed)\b/.test(entry))).toEqual([]);
    });

    it('a call checked with the token, then refused (its credential revoked, seen where it is spent): not counted as sent', async () => {
      await connected('unrefreshed-revoked', 10);
      const credential = await credentialFor('unrefreshed-revoked');
      provider.mode = 'unavailable';
      provider.unavailableStatus = 500;
      const failedBefore = await unrefreshed('failed');
      // Sent with the token (its refresh failed): counted once, and the gateway now remembers the credential.
      expect((await callMe(credential)).status).toBe(200);
      expect((await unrefreshed('failed')) - failedBefore).toBe(1);
      const deferredBefore = await unrefreshed('deferred');
      const apiCalls = provider.apiTokens.length;
      // Revoked in PostgreSQL: the remembered state passes the check (the token chosen, deferred),
      // the spending statement finds it revoked, and the call, checked again, is refused unsent.
      const jti = (JSON.parse(Buffer.from(credential.split('.')[1], 'base64url').toString()) as { jti: string }).jti;
      await pool.query('UPDATE access_tokens SET revoked_at = now() WHERE jti = $1', [jti]);
      const refused = await callMe(credential);
      expect(refused.status).toBe(401);
      expect(provider.apiTokens.length).toBe(apiCalls);
      expect((await unrefreshed('deferred')) - deferredBefore).toBe(0);
      expect((await callEvents(credential)).map((event) => [event.outcome, event.data.upstream_token_unrefreshed])).toEqual([
        ['success', 'failed'],
        ['denied', undefined],
      ]);
    });

    it('provider 500, the token expired: 503 with Retry-After, nothing forwarded, as before', async () => {
      const account = await connected('expired-down', -5);
      provider.mode = 'unavailable';
      provider.unavailableStatus = 500;
      const apiCalls = provider.apiTokens.length;
      const response = await callMe(await credentialFor('expired-down'));
      expect(response.status).toBe(503);
      expect(response.body.error).toBe('temporarily_unavailable');
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(Number(response.headers.get('retry-after'))).toBeLessThanOrEqual(5);
      expect(provider.apiTokens.length).toBe(apiCalls);
      const [event] = await failedEvents(account.id);
      expect(event.data).not.toHaveProperty('current_token_used');
    });

    it('provider 500, the token 1 s from expiry (inside the 2 s safety margin): 503, nothing forwarded', async () => {
      await connected('about-to-expire', 1);
      provider.mode = 'unavailable';
      provider.unavailableStatus = 500;
      const apiCalls = provider.apiTokens.length;
      const response = await callMe(await credentialFor('about-to-expire'));
      expect(response.status).toBe(503);
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(provider.apiTokens.length).toBe(apiCalls);
    });

    it('8 calls at once on two instances, the token near expiry and the provider down: all forwarded with it, one refresh request', async () => {
      const account = await connected('near-expiry-crowd', 15);
      const credential = await credentialFor('near-expiry-crowd');
      provider.mode = 'unavailable';
      provider.unavailableStatus = 500;
      const before = provider.refreshRequests;
      const apiCalls = provider.apiTokens.length;
      const countedBefore = (await unrefreshed('failed')) + (await unrefreshed('deferred'));
      const responses = await inParallel(credential, 8);
      expect(responses.map((response) => response.status)).toEqual(new Array(8).fill(200));
      expect(provider.apiTokens.slice(apiCalls)).toEqual(new Array(8).fill(account.accessToken));
      // Each call sent unrefreshed counted once, as its event says (a call that met the live lease
      // of another is sent with the token too, not due to a failure: neither flagged nor counted).
      const flagged = (await callEvents(credential)).filter((event) => event.data.upstream_token_unrefreshed !== undefined);
      expect(flagged.length).toBeGreaterThanOrEqual(1);
      expect((await unrefreshed('failed')) + (await unrefreshed('deferred')) - countedBefore).toBe(flagged.length);
      // The lease and the backoff: one attempt between every caller, on both instances.
      expect(provider.refreshRequests).toBe(before + 1);
      expect(await failedEvents(account.id)).toHaveLength(1);
      expect(await stored('near-expiry-crowd')).toMatchObject({ status: 'active', refresh_lease_holder: null });
    });

    it('the provider refusing the refresh (invalid_grant) breaks the connection even with a token not yet expired: 403', async () => {
      const account = await connected('near-expiry-revoked', 10);
      await http(`${provider.url}/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: account.refreshToken }).toString(),
      });
      const response = await callMe(await credentialFor('near-expiry-revoked'));
      expect(response.status).toBe(403);
      expect(response.body.error).toBe('connection_required');
      expect(await stored('near-expiry-revoked')).toMatchObject({ status: 'broken' });
    });
  });
  describe('a token without a refresh token: used until it expires, then the user connects again', () => {
    const failedEvents = async (id: string) =>
      (
        await pool.query<{ outcome: string; data: Record<string, unknown> }>(
          `SELECT outcome, data FROM audit_events WHERE type = 'connection.refresh_failed' AND data->>'connection_id' = $1 ORDER BY seq`,
          [id],
        )
      ).rows;
    const brokenError = async (id: string) =>
      (await pool.query<{ broken_error: string | null }>(`SELECT broken_error FROM connected_accounts WHERE id = $1`, [id])).rows[0]?.broken_error;

    it('the token 10 s from expiry (inside the refresh margin): 8 parallel calls on two instances, then 4 more, forwarded with it; still active', async () => {
      const account = await connected('no-rt-near-expiry', 10, { refreshToken: false });
      const credential = await credentialFor('no-rt-near-expiry');
      const before = provider.refreshRequests;
      const apiCalls = provider.apiTokens.length;
      const responses = [...(await inParallel(credential, 8)), ...(await inSequence(credential, 4))];
      expect(responses.map((response) => response.status)).toEqual(new Array(12).fill(200));
      for (const response of responses) expect(response.body).toEqual({ account: 'no-rt-near-expiry' });
      expect(provider.apiTokens.slice(apiCalls)).toEqual(new Array(12).fill(account.accessToken));
      // Nothing to refresh with: the provider is never asked, and nothing is marked or audited as failed.
      expect(provider.refreshRequests).toBe(before);
      expect(await stored('no-rt-near-expiry')).toMatchObject({ status: 'active', refresh_lease_holder: null });
      expect(await failedEvents(account.id)).toEqual([]);
    });

    it.each([
      ['expired', -5],
      ['1 s from expiry (inside the 2 s safety margin)', 1],
    ])('the token %s: 8 parallel calls on two instances refused 403, the connection broken once, one event, nothing sent', async (_name, expiresIn) => {
      const subject = `no-rt-expired-${expiresIn}`;
      const account = await connected(subject, expiresIn, { refreshToken: false });
      const credential = await credentialFor(subject);
      const before = provider.refreshRequests;
      const apiCalls = provider.apiTokens.length;
      const responses = [...(await inParallel(credential, 8)), ...(await inSequence(credential, 2))];
      for (const response of responses) {
        expect(response.status).toBe(403);
        expect(response.body.error).toBe('connection_required');
        expect(response.body.error_description).toMatch(/is broken \(expired and no refresh token was issued\): the user must connect again/);
      }
      expect(provider.apiTokens.length).toBe(apiCalls);
      expect(provider.refreshRequests).toBe(before);
      expect(await stored(subject)).toMatchObject({ status: 'broken', refresh_lease_holder: null });
      expect(await brokenError(account.id)).toBe('expired and no refresh token was issued');
      // Exactly one event for the change, whichever call on whichever instance made it.
      expect(await failedEvents(account.id)).toEqual([
        { outcome: 'failure', data: expect.objectContaining({ status: 'broken', error: 'expired and no refresh token was issued' }) },
      ]);
      expect(JSON.stringify(await failedEvents(account.id))).not.toContain(account.accessToken);
    });

    it('the upstream refusing the token (401) before its expiry: the connection broken once, 403, nothing refreshed', async () => {
      const account = await connected('no-rt-refused', 3600, { refreshToken: false });
      const credential = await credentialFor('no-rt-refused');
      provider.refusesEveryToken = true;
      const before = provider.refreshRequests;
      const apiCalls = provider.apiTokens.length;
      const responses = await inParallel(credential, 8);
      for (const response of responses) {
        expect(response.status).toBe(403);
        expect(response.body.error).toBe('connection_required');
      }
      // Each call sent the token once at most (none after the connection broke), and none again.
      expect(provider.apiTokens.slice(apiCalls).every((token) => token === account.accessToken)).toBe(true);
      expect(provider.apiTokens.length - apiCalls).toBeLessThanOrEqual(8);
      expect(provider.refreshRequests).toBe(before);
      expect(await stored('no-rt-refused')).toMatchObject({ status: 'broken', refresh_lease_holder: null });
      expect(await failedEvents(account.id)).toEqual([
        {
          outcome: 'failure',
          data: expect.objectContaining({ status: 'broken', error: 'the upstream refused the access token and no refresh token was issued' }),
        },
      ]);
    });

    it('a reconnect with a fresh token between the read and the marking is not broken', async () => {
      const account = await connected('no-rt-reconnected', -5, { refreshToken: false });
      const credential = await credentialFor('no-rt-reconnected');
      // Connected again (new tokens, a new expiry) after the gateway read the expired token: its marking finds other tokens.
      // The second gateway's ConnectedAccounts.
      const accounts: { markUnrefreshable: (...args: unknown[]) => Promise<unknown> } = Object(
        second.apps[second.apps.length - 1].get<ConnectedAccounts>(ConnectedAccounts, { strict: false }),
      );
      const mark = accounts.markUnrefreshable;
      const fresh = `at_no-rt-reconnected_${randomUUID()}`;
      provider.grant('no-rt-reconnected', fresh, `rt_unused_${randomUUID()}`);
      let interleaved = false;
      accounts.markUnrefreshable = async function (this: unknown, ...args: unknown[]) {
        if (!interleaved) {
          interleaved = true;
          await pool.query(`UPDATE connected_accounts SET tokens_sealed = $2, access_expires_at = now() + interval '1 hour' WHERE id = $1`, [
            account.id,
            sealFor('no-rt-reconnected', { access_token: fresh }),
          ]);
        }
        return mark.apply(this, args);
      };
      try {
        const response = await callMe(credential, secondGateway());
        expect(interleaved).toBe(true);
        expect(response.status).toBe(200);
        expect(provider.apiTokens[provider.apiTokens.length - 1]).toBe(fresh);
        expect(await stored('no-rt-reconnected')).toMatchObject({ status: 'active' });
        expect(await failedEvents(account.id)).toEqual([]);
      } finally {
        accounts.markUnrefreshable = mark;
      }
    });
  });
  describe('backoff after transient refresh failures: an outage is not one provider request and one audit event per call', () => {
    const failedEvents = async (id: string) =>
      (
        await pool.query<{ data: Record<string, unknown> }>(
          `SELECT data FROM audit_events WHERE type = 'connection.refresh_failed' AND data->>'connection_id' = $1 ORDER BY seq`,
          [id],
        )
      ).rows.map((row) => row.data);
    const backoffOf = async (id: string) =>
      (
        await pool.query<{ refresh_failures: number; retry_wait: number | null }>(
          `SELECT refresh_failures, ceil(extract(epoch FROM refresh_retry_at - now()))::int AS retry_wait FROM connected_accounts WHERE id = $1`,
          [id],
        )
      ).rows[0];
    /** `writ_account_refresh_deferred_total{connector="codehost"}`, summed over both instances. */
    const deferred = async () =>
      (sample(await scrape(first.gatewayUrl), 'writ_account_refresh_deferred_total', { connector: 'codehost' }) ?? 0) +
      (sample(await scrape(secondGateway()), 'writ_account_refresh_deferred_total', { connector: 'codehost' }) ?? 0);
    const retryAfter = (response: TestResponse) => Number(response.headers.get('retry-after'));
    /** The responses refused because the refresh backs off, the provider not asked (reason `refresh_backoff`): what the metric counts. */
    const backingOff = (responses: TestResponse[]) =>
      responses.filter((response) =>
        /was unavailable at the last (\d+ )?refresh.*: it is not asked again for \d+ s/.test(String(response.body.error_description)),
      ).length;
    /** Waits (real time) until the account's backoff is over by PostgreSQL's clock. */
    async function waitOut(id: string): Promise<void> {
      const wait = (await backoffOf(id)).retry_wait ?? 0;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait) * 1000 + 100));
    }

    it('N parallel calls on two instances during an outage: one attempt and one event per interval, growing; recovery after the interval', async () => {
      const account = await connected('backoff', -60);
      const credential = await credentialFor('backoff');
      provider.mode = 'unavailable';
      const before = provider.refreshRequests;
      const deferredBefore = await deferred();

      // Interval 1: 8 parallel calls, then 6 more in sequence, on both instances: one attempt.
      const parallel = await inParallel(credential, 8);
      const sequential = await inSequence(credential, 6);
      for (const response of [...parallel, ...sequential]) {
        expect(response.status).toBe(503);
        expect(response.body.error).toBe('temporarily_unavailable');
        expect(retryAfter(response)).toBeGreaterThanOrEqual(1);
        expect(retryAfter(response)).toBeLessThanOrEqual(5);
      }
      for (const response of sequential) expect(response.body.error_description).toMatch(/it is not asked again for \d+ s/);
      expect(provider.refreshRequests).toBe(before + 1);
      expect(await failedEvents(account.id)).toEqual([expect.objectContaining({ status: 'active', consecutive_failures: 1 })]);
      const [firstEvent] = await failedEvents(account.id);
      expect(firstEvent.retry_after_seconds).toBeGreaterThanOrEqual(4);
      expect(firstEvent.retry_after_seconds).toBeLessThanOrEqual(5);
      // Refused calls are counted, not audited: each call refused for the backoff exactly once,
      // though the gateway checks a call again on fresh state after a refusal on remembered state.
      // Of the parallel calls, those that shared the failed attempt are its failure, not counted.
      expect(backingOff(sequential)).toBe(6);
      expect((await deferred()) - deferredBefore).toBe(backingOff(parallel) + 6);
      expect(await stored('backoff')).toMatchObject({ status: 'active', refresh_lease_holder: null });

      // Interval 2, after waiting the first out (PostgreSQL's clock): one more attempt, a longer backoff.
      await waitOut(account.id);
      const second = await inParallel(credential, 8);
      for (const response of second) expect(response.status).toBe(503);
      expect(provider.refreshRequests).toBe(before + 2);
      const events = await failedEvents(account.id);
      expect(events).toHaveLength(2);
      expect(events[1]).toMatchObject({ consecutive_failures: 2 });
      expect(events[1].retry_after_seconds).toBeGreaterThanOrEqual(8);
      expect(events[1].retry_after_seconds).toBeLessThanOrEqual(10);
      expect(Math.max(...second.map(retryAfter))).toBeGreaterThan(5);

      // The provider back within the backoff: still refused, without asking it, each call counted once.
      provider.mode = 'answer';
      const deferredEarly = await deferred();
      const early = await inParallel(credential, 4);
      for (const response of early) expect(response.status).toBe(503);
      expect(backingOff(early)).toBe(4);
      expect((await deferred()) - deferredEarly).toBe(4);
      expect(provider.refreshRequests).toBe(before + 2);

      // After the interval: one refresh for parallel calls on both instances, all served, the backoff reset.
      await waitOut(account.id);
      const recovered = await inParallel(credential, 8);
      expect(recovered.map((response) => response.status)).toEqual(new Array(8).fill(200));
      expect(provider.refreshRequests).toBe(before + 3);
      expect(await backoffOf(account.id)).toEqual({ refresh_failures: 0, retry_wait: null });
      expect(await failedEvents(account.id)).toHaveLength(2);

      // A later outage starts again from the first interval.
      await pool.query(`UPDATE connected_accounts SET access_expires_at = now() - interval '1 minute' WHERE id = $1`, [account.id]);
      provider.mode = 'unavailable';
      const again = await callMe(credential, secondGateway());
      expect(again.status).toBe(503);
      expect(retryAfter(again)).toBeLessThanOrEqual(5);
      expect((await failedEvents(account.id))[2]).toMatchObject({ consecutive_failures: 1 });
    }, 60_000);

    it('the backoff grows to 5 min at most', async () => {
      const account = await connected('backoff-long', -60);
      const credential = await credentialFor('backoff-long');
      provider.mode = 'unavailable';
      // Ten failures in a row before this one: 5 s doubled ten times is far past the cap.
      await pool.query(`UPDATE connected_accounts SET refresh_failures = 10 WHERE id = $1`, [account.id]);
      const before = provider.refreshRequests;
      const response = await callMe(credential);
      expect(response.status).toBe(503);
      expect(provider.refreshRequests).toBe(before + 1);
      const { refresh_failures: failures, retry_wait: wait } = await backoffOf(account.id);
      expect(failures).toBe(11);
      expect(wait).toBeGreaterThan(0.75 * 300 - 2);
      expect(wait).toBeLessThanOrEqual(300);
      const later = await inParallel(credential, 4);
      for (const refused of later) {
        expect(refused.status).toBe(503);
        expect(retryAfter(refused)).toBeLessThanOrEqual(300);
        expect(retryAfter(refused)).toBeGreaterThan(200);
      }
      expect(provider.refreshRequests).toBe(before + 1);
    });

    it("decided in the lease's claim: a failure recorded by another instance between this one's read and its claim is not followed by a second attempt", async () => {
      const account = await connected('backoff-stale', -60);
      const credential = await credentialFor('backoff-stale');
      // The second gateway's ConnectedAccounts: between its read of the account (no backoff then)
      // and its claim, another instance's attempt fails (its release and backoff, as the holder writes them).
      const accounts: { claimLease: (...args: unknown[]) => Promise<unknown> } = Object(
        second.apps[second.apps.length - 1].get<ConnectedAccounts>(ConnectedAccounts, { strict: false }),
      );
      const claim = accounts.claimLease;
      let interleaved = false;
      accounts.claimLease = async function (this: unknown, ...args: unknown[]) {
        if (!interleaved) {
          interleaved = true;
          await pool.query(`UPDATE connected_accounts SET refresh_failures = 1, refresh_retry_at = now() + interval '5 seconds' WHERE id = $1`, [account.id]);
        }
        return claim.apply(this, args);
      };
      try {
        const before = provider.refreshRequests;
        const response = await callMe(credential, secondGateway());
        expect(interleaved).toBe(true);
        expect(response.status).toBe(503);
        expect(response.body.error_description).toMatch(/it is not asked again for \d+ s/);
        expect(Number(response.headers.get('retry-after'))).toBeLessThanOrEqual(5);
        expect(provider.refreshRequests).toBe(before);
      } finally {
        accounts.claimLease = claim;
      }
    });

    it.each([
      ['503, delay-seconds', 503, () => '120', 120],
      ['429, delay-seconds', 429, () => '90', 90],
      ['503, an HTTP-date', 503, () => new Date(Date.now() + 600_000).toUTCString(), 600],
      ['429, past the cap', 429, () => '86400', 3600],
    ])(
      "the provider's Retry-After (%s) is heeded when later than the backoff, by every instance, for parallel calls",
      async (_name, status, value, seconds) => {
        const subject = `retry-after-${status}-${seconds}`;
        const account = await connected(subject, -60);
        const credential = await credentialFor(subject);
        provider.mode = 'unavailable';
        provider.unavailableStatus = status;
        provider.retryAfter = value();
        const before = provider.refreshRequests;
        const responses = await inParallel(credential, 8);
        for (const response of responses) expect(response.status).toBe(503);
        expect(provider.refreshRequests).toBe(before + 1);
        const { retry_wait: wait } = await backoffOf(account.id);
        expect(wait).toBeGreaterThan(seconds - 5);
        expect(wait).toBeLessThanOrEqual(seconds);
        const [event] = await failedEvents(account.id);
        expect(event).toMatchObject({ consecutive_failures: 1, upstream_retry_after_seconds: expect.any(Number) });
        expect(event.retry_after_seconds).toBeGreaterThan(seconds - 5);
        // The provider back (or not), the calls keep off it until then, on both instances.
        provider.mode = 'answer';
        const later = await inParallel(credential, 6);
        for (const response of later) {
          expect(response.status).toBe(503);
          expect(retryAfter(response)).toBeGreaterThan(seconds - 5);
          expect(retryAfter(response)).toBeLessThanOrEqual(seconds);
        }
        expect(provider.refreshRequests).toBe(before + 1);
      },
    );

    it.each(['soon', '-5', '1.5', '120, 120', 'Thu, 01 Dec 2100 00:00:00 GMT', 'Wed, 31 Nov 2100 00:00:00 GMT'])(
      'a Retry-After that is not one (%j) is ignored: the backoff alone applies',
      async (value) => {
        const subject = `retry-after-garbage-${randomUUID()}`;
        const account = await connected(subject, -60);
        provider.mode = 'unavailable';
        provider.retryAfter = value;
        expect((await callMe(await credentialFor(subject))).status).toBe(503);
        const { retry_wait: wait } = await backoffOf(account.id);
        expect(wait).toBeLessThanOrEqual(5);
        const [event] = await failedEvents(account.id);
        expect(event).not.toHaveProperty('upstream_retry_after_seconds');
      },
    );

    it('a permanent failure (invalid_grant) during an outage history still breaks the connection at the next attempt', async () => {
      const account = await connected('backoff-revoked', -60);
      provider.mode = 'unavailable';
      expect((await callMe(await credentialFor('backoff-revoked'))).status).toBe(503);
      await http(`${provider.url}/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: account.refreshToken }).toString(),
      });
      provider.mode = 'answer';
      await pool.query(`UPDATE connected_accounts SET refresh_retry_at = now() WHERE id = $1`, [account.id]);
      const response = await callMe(await credentialFor('backoff-revoked'));
      expect(response.status).toBe(403);
      expect(response.body.error).toBe('connection_required');
      expect(await stored('backoff-revoked')).toMatchObject({ status: 'broken', refresh_lease_holder: null });
    });
  });
});
