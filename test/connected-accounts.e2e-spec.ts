import { createHash, randomBytes } from 'node:crypto';
import { decodeJwt, exportJWK, SignJWT, generateKeyPair } from 'jose';
import type { Pool } from 'pg';
import { accountSealContext, ConnectedAccounts } from '@writ/accounts';
import { clientAuthFields, insertIdentityProviderRow, rowIntegrityOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { exchangeFields, tasksToken } from './support/grant-flow';
import { http, postForm, sendJson, TestClient, tokenRequest } from './support/oauth-client';
import { eventually } from './support/eventually';
import { startMockUpstream } from './support/mock-upstreams';
import { CookieJar, loginAndConsent, startOidcProvider, TestOidcProvider } from './support/oidc-provider';
import { seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const OPERATIONS = [{ name: 'me.get', method: 'GET', path: '/api/me', risk: 'read', constraints: {} }];
const ALLOWED = [{ type: 'connector', connector: 'codehost', actions: ['me.get'] }];
const APP_CALLBACK = 'http://127.0.0.1:9/cb';

/**
 * Issue 13 end to end, against a real OAuth 2.0 / OpenID Connect provider (node-oidc-provider
 * on loopback, scripted login and consent): users connect through connect links, tasks act on
 * behalf of verified users, two gateway instances inject each task's own user's token,
 * refresh once between them, store rotated refresh tokens, turn a revoked grant into a broken
 * connection, and revoke upstream on disconnect.
 */
describe('connected accounts', () => {
  let first: TestServices;
  let second: TestServices;
  let provider: TestOidcProvider;
  let pool: Pool;
  let agent: TestClient;
  let orchestrator: TestClient;
  let untrusted: TestClient;
  const idTokens: Record<string, string> = {};
  let privateJwk: { kty: string; d: string; kid: string };

  const secondGateway = () => `http://127.0.0.1:${second.apps[second.apps.length - 1].getHttpServer().address().port}`;

  /** The user's ID token for the orchestrator's app: a full authorization code flow with PKCE at the provider. */
  function idTokenOf(account: string): Promise<string> {
    return idTokenFor(account, 'orchestrator-app', provider.appSecret, APP_CALLBACK);
  }

  /** A genuine ID token of the provider for `clientId` (its `aud`), through the client's own code flow. */
  async function idTokenFor(account: string, clientId: string, secret: string, redirectUri: string): Promise<string> {
    const verifier = randomBytes(32).toString('base64url');
    const challenge = createHash('sha256').update(verifier).digest('base64url');
    const start = new URL(`${provider.issuer}/auth`);
    for (const [name, value] of Object.entries({
      client_id: clientId,
      response_type: 'code',
      scope: 'openid',
      redirect_uri: redirectUri,
      state: 'st',
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }))
      start.searchParams.set(name, value);
    const final = await loginAndConsent(start.href, account, redirectUri, new CookieJar());
    const code = new URL(final).searchParams.get('code')!;
    const response = await postForm(
      `${provider.issuer}/token`,
      { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier },
      {
        authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString('base64')}`,
      },
    );
    expect(response.status).toBe(200);
    return response.body.id_token;
  }

  async function connectLink(userToken: string): Promise<string> {
    const response = await sendJson(
      'POST',
      `${first.issuer}/v1/connections/links`,
      { connector_id: 'codehost', user_token: userToken },
      await tasksToken(first, orchestrator),
    );
    expect(response.status).toBe(201);
    expect(response.body.expires_at).toBeDefined();
    return response.body.url;
  }

  /** The user opens the link in a browser, signs in and consents at the provider, and lands on Writ's callback. */
  async function connect(account: string): Promise<void> {
    const jar = new CookieJar();
    const callback = await loginAndConsent(await connectLink(idTokens[account]), account, `${first.issuer}/connect/callback`, jar);
    const page = await fetch(callback, { headers: { cookie: jar.header() } });
    expect(await page.text()).toContain('Your account is connected to codehost');
    expect(page.status).toBe(200);
  }

  async function taskFor(overrides: Record<string, unknown>, by: TestClient = orchestrator): Promise<{ status: number; body: any }> {
    return sendJson(
      'POST',
      `${first.issuer}/v1/tasks`,
      {
        agent_id: agent.id,
        purpose: 'read the user profile',
        allowed: ALLOWED,
        ttl_seconds: 600,
        ...overrides,
      },
      await tasksToken(first, by),
    );
  }

  async function credentialFor(taskToken: string): Promise<string> {
    const response = await tokenRequest(first.issuer, agent, exchangeFields(taskToken, ALLOWED));
    expect(response.status).toBe(200);
    return response.body.access_token;
  }

  async function credentialForUser(account: string): Promise<string> {
    const task = await taskFor({ user_token: idTokens[account] });
    expect(task.status).toBe(201);
    return credentialFor(task.body.task_id ? task.body.task_token : '');
  }

  const callMe = (token: string, gateway = first.gatewayUrl) =>
    http(`${gateway}/connectors/codehost/api/me`, { headers: { authorization: `Bearer ${token}` } });

  async function account(subject: string) {
    const { rows } = await pool.query<{ id: string; status: string; broken_error: string | null; tokens_sealed: Buffer; user_issuer: string }>(
      `SELECT id, status, broken_error, tokens_sealed, user_issuer FROM connected_accounts WHERE connector_id = 'codehost' AND user_subject = $1`,
      [subject],
    );
    return rows[0];
  }

  function sealedTokens(row: { tokens_sealed: Buffer; user_issuer: string }, subject: string): { access_token: string; refresh_token?: string } {
    const context = accountSealContext('codehost', `${provider.issuer}/token`, { issuer: row.user_issuer, subject });
    return JSON.parse(first.runtime.masterKey.unseal(row.tokens_sealed, context).toString('utf8'));
  }

  /** A connector whose upstream credential is the provider's client `writ-upstream` (users connect their accounts). */
  async function seedUserConnector(id: string): Promise<void> {
    await seedConnector(pool, id, OPERATIONS, provider.issuer);
    await setConnectorCredential(pool, first.runtime.masterKey, id, {
      type: 'oauth2_authorization_code',
      authorization_url: `${provider.issuer}/auth`,
      token_url: `${provider.issuer}/token`,
      revocation_url: `${provider.issuer}/token/revocation`,
      issuer: provider.issuer,
      client_id: 'writ-upstream',
      client_secret: provider.upstreamSecret,
      scopes: ['repo:read'],
    });
  }

  const expire = (subject: string) =>
    pool.query(`UPDATE connected_accounts SET access_expires_at = now() - interval '1 minute' WHERE user_subject = $1`, [subject]);

  beforeAll(async () => {
    first = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    second = await startSecondInstance(first, { gateway: createGatewayApp });
    const keys = await generateKeyPair('ES256', { extractable: true });
    provider = await startOidcProvider(`${first.issuer}/connect/callback`, { ...(await exportJWK(keys.publicKey)), kid: 'writ-1' });
    privateJwk = { ...(await exportJWK(keys.privateKey)), kid: 'writ-1' } as typeof privateJwk;
    pool = first.runtime.pool;
    agent = await seedAgent(pool, 'agent-1');
    orchestrator = await seedOrchestrator(pool, 'orch-1', ['agent-1']);
    untrusted = await seedOrchestrator(pool, 'orch-2', ['agent-1']);
    await seedUserConnector('codehost');
    const registered = await sendJson(
      'POST',
      `${first.adminUrl}/v1/identity-providers`,
      { issuer: provider.issuer, jwks_uri: `${provider.issuer}/jwks`, audience: 'orchestrator-app' },
      first.adminToken,
    );
    expect(registered.status).toBe(201);
    for (const user of ['alice', 'bob', 'carol']) idTokens[user] = await idTokenOf(user);
    await connect('alice');
    await connect('bob');
  });
  afterAll(async () => {
    await second?.close();
    await first?.close();
    await provider?.close();
  });

  it('connects users: their tokens sealed per user, every step audited without a token', async () => {
    const alice = await account('alice');
    expect(alice.status).toBe('active');
    const tokens = sealedTokens(alice, 'alice');
    expect(tokens.refresh_token).toBeDefined();
    const { rows } = await pool.query<{ type: string; data: Record<string, unknown> }>(
      `SELECT type, data FROM audit_events WHERE type LIKE 'connection.%' ORDER BY seq`,
    );
    expect(rows.map((row) => row.type)).toEqual(expect.arrayContaining(['connection.link_issued', 'connection.link_opened', 'connection.connected']));
    const text = JSON.stringify(rows);
    expect(text).not.toContain(tokens.access_token);
    expect(text).not.toContain(tokens.refresh_token);
    expect(text).not.toContain(provider.upstreamSecret);
  });

  it('calls through the gateway as the task user: sub = user, act = agent, in the token and introspection', async () => {
    const token = await credentialForUser('alice');
    const claims = decodeJwt(token);
    expect(claims.sub).toBe('alice');
    expect(claims.act).toEqual({ sub: 'agent-1' });
    const introspection = await postForm(`${first.issuer}/oauth2/introspect`, { token, ...(await clientAuthFields(agent.id, agent.key, first.issuer)) });
    expect(introspection.body).toMatchObject({ active: true, sub: 'alice', act: { sub: 'agent-1' } });
    const response = await callMe(token);
    expect(response.status).toBe(200);
    expect(response.body.account).toBe('alice');
    const userToken = sealedTokens(await account('alice'), 'alice').access_token;
    expect(response.text).not.toContain(userToken);
    const echoed = await http(`${first.gatewayUrl}/connectors/codehost/api/me?echo=1`, { headers: { authorization: `Bearer ${token}` } });
    expect(echoed.status).toBe(200);
    expect(echoed.headers.get('x-echo-token')).toBeNull();
    expect(JSON.stringify([...echoed.headers])).not.toContain(userToken);
    expect(echoed.text).not.toContain(userToken);
    expect(echoed.body.seen_authorization).toBe(`Bearer ${'*'.repeat(userToken.length)}`);
  });

  it("never gives a task for one user another user's token, even in parallel", async () => {
    const [aliceToken, bobToken] = [await credentialForUser('alice'), await credentialForUser('bob')];
    const results = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((index) =>
        callMe(index % 2 === 0 ? aliceToken : bobToken, index % 3 === 0 ? secondGateway() : first.gatewayUrl).then((response) => ({ index, response })),
      ),
    );
    for (const { index, response } of results) {
      expect(response.status).toBe(200);
      expect(response.body.account).toBe(index % 2 === 0 ? 'alice' : 'bob');
    }
  });

  it("does not open one user's sealed tokens copied in SQL into another user's row", async () => {
    const [alice, bob] = [await account('alice'), await account('bob')];
    await pool.query(`UPDATE connected_accounts SET tokens_sealed = $1 WHERE id = $2`, [alice.tokens_sealed, bob.id]);
    try {
      const calls = (await provider.stats()).apiCalls.length;
      const response = await callMe(await credentialForUser('bob'));
      expect(response.status).toBe(403);
      expect(response.body.error_description).toMatch(/does not open/);
      expect((await provider.stats()).apiCalls.length).toBe(calls);
    } finally {
      await pool.query(`UPDATE connected_accounts SET tokens_sealed = $1 WHERE id = $2`, [bob.tokens_sealed, bob.id]);
    }
  });

  it('refreshes an expired access token once across two gateways, storing the rotated refresh token', async () => {
    const tokens = await Promise.all([0, 1, 2, 3, 4, 5].map(() => credentialForUser('alice')));
    const before = sealedTokens(await account('alice'), 'alice');
    await expire('alice');
    const { refreshes } = await provider.stats();
    const results = await Promise.all(tokens.map((token, index) => callMe(token, index % 2 === 0 ? first.gatewayUrl : secondGateway())));
    for (const response of results) {
      expect(response.status).toBe(200);
      expect(response.body.account).toBe('alice');
    }
    expect((await provider.stats()).refreshes).toBe(refreshes + 1);
    const after = sealedTokens(await account('alice'), 'alice');
    expect(after.access_token).not.toBe(before.access_token);
    expect(after.refresh_token).toBeDefined();
    expect(after.refresh_token).not.toBe(before.refresh_token);

    // The provider rotates and treats reuse of a consumed refresh token as theft: a second
    // refresh works only because the rotated token was stored.
    await expire('alice');
    expect((await callMe(await credentialForUser('alice'))).status).toBe(200);
    expect((await provider.stats()).refreshes).toBe(refreshes + 2);
    const { rows } = await pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'connection.refreshed' ORDER BY seq DESC LIMIT 1`,
    );
    expect(rows[0].data).toMatchObject({ rotated: true });
  });

  it("refreshes once and resends when the upstream refuses a user's access token before its expiry", async () => {
    const { access_token } = sealedTokens(await account('alice'), 'alice');
    expect((await fetch(`${provider.issuer}/test/drop-access-token?token=${encodeURIComponent(access_token)}`)).status).toBe(204);
    const { refreshes } = await provider.stats();
    const response = await callMe(await credentialForUser('alice'));
    expect(response.status).toBe(200);
    expect(response.body.account).toBe('alice');
    expect((await provider.stats()).refreshes).toBe(refreshes + 1);
    expect(sealedTokens(await account('alice'), 'alice').access_token).not.toBe(access_token);
  });

  it('marks the connection broken when the upstream grant was revoked, and refuses before sending anything', async () => {
    const bob = await account('bob');
    const { refresh_token } = sealedTokens(bob, 'bob');
    // The user revokes Writ's access at the provider.
    const revoked = await postForm(
      `${provider.issuer}/token/revocation`,
      { token: refresh_token!, token_type_hint: 'refresh_token' },
      {
        authorization: `Basic ${Buffer.from(`writ-upstream:${provider.upstreamSecret}`).toString('base64')}`,
      },
    );
    expect(revoked.status).toBe(200);
    await expire('bob');
    const token = await credentialForUser('bob');
    const calls = (await provider.stats()).apiCalls.length;
    const response = await callMe(token);
    expect(response.status).toBe(403);
    expect(response.body.error).toBe('connection_required');
    expect(response.body.error_description).toMatch(/broken \(the upstream answered invalid_grant/);
    expect((await provider.stats()).apiCalls.length).toBe(calls);
    expect(await account('bob')).toMatchObject({ status: 'broken', broken_error: expect.stringMatching(/invalid_grant/) });
    const mine = await http(`${first.issuer}/v1/me/connections`, { headers: { authorization: `Bearer ${idTokens.bob}` } });
    expect(mine.body.items).toEqual([expect.objectContaining({ connector_id: 'codehost', status: 'broken', user: { iss: provider.issuer, sub: 'bob' } })]);
    expect(JSON.stringify(mine.body)).not.toContain(refresh_token);
    // The policy sees the connection's status too.
    const { rows } = await pool.query<{ data: any }>(`SELECT data FROM audit_events WHERE type = 'connection.refresh_failed' ORDER BY seq DESC LIMIT 1`);
    expect(rows[0].data).toMatchObject({ status: 'broken', user: { sub: 'bob' } });
  });

  it('connecting again clears the refresh backoff left by a provider outage: the next call refreshes at once', async () => {
    idTokens.dave = await idTokenOf('dave');
    await connect('dave');
    const { id } = await account('dave');
    // Six transient failures in a row: the next refresh waits up to 5 min.
    await pool.query(
      `UPDATE connected_accounts SET refresh_failures = 6, refresh_retry_at = now() + interval '5 minutes', access_expires_at = now() - interval '1 minute' WHERE id = $1`,
      [id],
    );
    const { refreshes } = await provider.stats();
    const waiting = await callMe(await credentialForUser('dave'));
    expect(waiting.status).toBe(503);
    expect(waiting.body.error_description).toMatch(/was unavailable at the last 6 refreshes .*: it is not asked again for \d+ s/);
    expect(Number(waiting.headers.get('retry-after'))).toBeGreaterThan(250);
    expect((await provider.stats()).refreshes).toBe(refreshes);

    await connect('dave');
    const { rows } = await pool.query(`SELECT refresh_failures, refresh_retry_at FROM connected_accounts WHERE id = $1`, [id]);
    expect(rows[0]).toEqual({ refresh_failures: 0, refresh_retry_at: null });
    await expire('dave');
    const response = await callMe(await credentialForUser('dave'));
    expect(response.status).toBe(200);
    expect(response.body.account).toBe('dave');
    expect((await provider.stats()).refreshes).toBe(refreshes + 1);
  });

  it('refuses a task without a verified user, or a user without a connection, before anything is sent', async () => {
    const calls = (await provider.stats()).apiCalls.length;
    const anonymous = await taskFor({ on_behalf_of: 'alice' });
    expect(anonymous.status).toBe(201);
    const noUser = await callMe(await credentialFor(anonymous.body.task_token));
    expect(noUser.status).toBe(403);
    expect(noUser.body.error_description).toMatch(/no verified user/);
    const carol = await callMe(await credentialForUser('carol'));
    expect(carol.status).toBe(403);
    expect(carol.body.error_description).toMatch(/has not connected an account on codehost/);
    expect((await provider.stats()).apiCalls.length).toBe(calls);
  });

  it('refuses forged, tampered, foreign and merely asserted user tokens at task creation', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    const forged = await new SignJWT({ sub: 'alice' })
      .setProtectedHeader({ alg: 'RS256', kid: decodeProtectedKid(idTokens.alice) })
      .setIssuer(provider.issuer)
      .setAudience('orchestrator-app')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
    const [header, payload, signature] = idTokens.alice.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    const tampered = [header, Buffer.from(JSON.stringify({ ...claims, sub: 'bob' })).toString('base64url'), signature].join('.');
    const foreign = await new SignJWT({ sub: 'alice' })
      .setProtectedHeader({ alg: 'RS256' })
      .setIssuer('https://idp.attacker.example')
      .setAudience('orchestrator-app')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
    const unsigned = [
      Buffer.from('{"alg":"none"}').toString('base64url'),
      Buffer.from(JSON.stringify({ ...claims, sub: 'bob' })).toString('base64url'),
      '',
    ].join('.');
    const otherAudience = await idTokenFor('carol', 'writ-upstream', provider.upstreamSecret, `${first.issuer}/connect/callback`);
    expect(decodeJwt(otherAudience).aud).toBe('writ-upstream');
    for (const token of [forged, tampered, foreign, unsigned, otherAudience, 'not-a-jwt']) {
      const response = await taskFor({ user_token: token });
      expect(response.status).toBe(400);
      expect(response.body.fields ?? response.body).toEqual(expect.arrayContaining([expect.objectContaining({ field: 'user_token' })]));
    }
    const asserted = await taskFor({ purpose: 'p', ttl_seconds: 60, user: { iss: provider.issuer, sub: 'alice' } }, untrusted);
    expect(asserted.status).toBe(400);
    expect(JSON.stringify(asserted.body)).toMatch(/not trusted to assert users/);
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM tasks WHERE user_subject IS NOT NULL AND orchestrator_id = 'orch-2'`);
    expect(rows[0].n).toBe(0);

    // Trusted explicitly for an issuer, the orchestrator may assert its users (and only its).
    await insertIdentityProviderRow(pool, rowIntegrityOf(pool), {
      issuer: 'https://sso.corp.example',
      jwksUri: 'https://sso.corp.example/jwks',
      assertingOrchestrators: ['orch-2'],
    });
    const trusted = await taskFor({ purpose: 'p', ttl_seconds: 60, user: { iss: 'https://sso.corp.example', sub: 'dave' } }, untrusted);
    expect(trusted.status).toBe(201);
    const stored = await pool.query(`SELECT user_issuer, user_subject FROM tasks WHERE id = $1`, [trusted.body.task_id]);
    expect(stored.rows[0]).toEqual({ user_issuer: 'https://sso.corp.example', user_subject: 'dave' });
    const shown = await http(`${first.issuer}/v1/tasks/${trusted.body.task_id}`, {
      headers: { authorization: `Bearer ${await tasksToken(first, untrusted)}` },
    });
    expect(shown.body.user).toEqual({ iss: 'https://sso.corp.example', sub: 'dave' });
    const other = await taskFor({ purpose: 'p', ttl_seconds: 60, user: { iss: 'https://sso.corp.example', sub: 'dave' } }, orchestrator);
    expect(other.status).toBe(400);
  });

  it('refuses an authorization response from another issuer (RFC 9207 mix-up)', async () => {
    const jar = new CookieJar();
    const callback = new URL(await loginAndConsent(await connectLink(idTokens.carol), 'carol', `${first.issuer}/connect/callback`, jar));
    callback.searchParams.set('iss', 'https://idp.attacker.example');
    const page = await fetch(callback, { headers: { cookie: jar.header() } });
    expect(page.status).toBe(400);
    expect(await page.text()).toMatch(/did not connect the account/);
    expect(await account('carol')).toBeUndefined();
  });

  it('connect links are one-time and bound to the browser that opened them', async () => {
    const link = await connectLink(idTokens.carol);
    const jar = new CookieJar();
    const callback = await loginAndConsent(link, 'carol', `${first.issuer}/connect/callback`, jar);
    expect((await fetch(link, { redirect: 'manual' })).status).toBe(400);
    // Another browser (no cookie) cannot complete the attempt.
    const stolen = await fetch(callback);
    expect(stolen.status).toBe(400);
    expect(await stolen.text()).toMatch(/another browser/);
    // Nor can the right browser, afterwards: the attempt is spent.
    expect((await fetch(callback, { headers: { cookie: jar.header() } })).status).toBe(400);
    expect(await account('carol')).toBeUndefined();
  });

  it("another site cannot run its own connect link in a victim's browser (login CSRF): the victim's account is not connected to it", async () => {
    // dave connected his own account: his browser keeps a session and a grant at the provider,
    // which then answers a new authorization request for the same app at once, with no page.
    idTokens.dave = await idTokenOf('dave');
    idTokens.mallory = await idTokenOf('mallory');
    const dave = new CookieJar();
    const own = await loginAndConsent(await connectLink(idTokens.dave), 'dave', `${first.issuer}/connect/callback`, dave);
    expect((await fetch(own, { headers: { cookie: dave.header() } })).status).toBe(200);
    // mallory gets a link for herself, and her page sends dave's browser to it (a top-level navigation).
    const link = await connectLink(idTokens.mallory);
    let url = link;
    let answer: Response | undefined;
    for (let hop = 0; hop < 10 && !url.startsWith(`${first.issuer}/connect/callback`); hop += 1) {
      answer = await fetch(url, { redirect: 'manual', headers: { cookie: dave.header(), 'sec-fetch-site': hop === 0 ? 'cross-site' : 'none' } });
      dave.store(answer);
      if (answer.status < 300 || answer.status >= 400) break;
      url = new URL(answer.headers.get('location')!, url).href;
    }
    if (url.startsWith(`${first.issuer}/connect/callback`)) await (await fetch(url, { headers: { cookie: dave.header() } })).text();
    // Nothing was connected for her (before, dave's account was, with no page shown to him)...
    expect(await account('mallory')).toBeUndefined();
    // ...Writ asks on its own page, naming the user the link is for, and nothing has started.
    expect(answer!.status).toBe(200);
    expect(answer!.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
    const page = await answer!.text();
    expect(page).toContain('<b>mallory</b>');
    expect(page).toMatch(/<form method="post">/);
    // Her page cannot press the button for him either: a cross-site form is refused, the link stays unopened.
    const forged = await fetch(link, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie: dave.header(), origin: 'https://mallory.example', 'content-type': 'application/x-www-form-urlencoded' },
      body: '',
    });
    expect(forged.status).toBe(403);
    expect(forged.headers.get('location')).toBeNull();
    expect(await account('mallory')).toBeUndefined();
    const { rows } = await pool.query(`SELECT 1 FROM connect_links WHERE user_subject = 'mallory' AND opened_at IS NULL`);
    expect(rows).toHaveLength(1);
    // The later tests count the connections of alice and bob only.
    await pool.query(`DELETE FROM connected_accounts WHERE user_subject = 'dave'`);
  });

  it('admin API: identity providers pass the destination checks; connections listed without tokens, links for named users', async () => {
    const metadata = await sendJson(
      'POST',
      `${first.adminUrl}/v1/identity-providers`,
      { issuer: 'https://evil.example', jwks_uri: 'http://169.254.169.254/jwks', audience: 'x' },
      first.adminToken,
    );
    expect(metadata.status).toBe(400);
    expect(JSON.stringify(metadata.body)).toMatch(/jwks_uri/);
    const list = await http(`${first.adminUrl}/v1/connections?connector_id=codehost`, { headers: { authorization: `Bearer ${first.adminToken}` } });
    expect(list.status).toBe(200);
    expect(list.body.items.map((item: { user: { sub: string } }) => item.user.sub).sort()).toEqual(['alice', 'bob']);
    const secrets = [sealedTokens(await account('alice'), 'alice'), sealedTokens(await account('bob'), 'bob')].flatMap((t) => [
      t.access_token,
      t.refresh_token,
    ]);
    for (const secret of secrets) expect(list.text).not.toContain(secret);
    const unknownIssuer = await sendJson(
      'POST',
      `${first.adminUrl}/v1/connections/links`,
      { connector_id: 'codehost', user: { iss: 'https://nobody.example', sub: 'x' } },
      first.adminToken,
    );
    expect(unknownIssuer.status).toBe(400);
    const link = await sendJson(
      'POST',
      `${first.adminUrl}/v1/connections/links`,
      { connector_id: 'codehost', user: { iss: provider.issuer, sub: 'erin' } },
      first.adminToken,
    );
    expect(link.status).toBe(201);
    expect(link.body.url).toMatch(new RegExp(`^${first.issuer}/connect/`));
    const notConnected = await sendJson(
      'POST',
      `${first.adminUrl}/v1/connections/links`,
      { connector_id: 'missing', user: { iss: provider.issuer, sub: 'erin' } },
      first.adminToken,
    );
    expect(notConnected.status).toBe(404);
  });

  it('admin disconnect revokes at the upstream too', async () => {
    const bob = await account('bob');
    const { revocations } = await provider.stats();
    const response = await http(`${first.adminUrl}/v1/connections/${bob.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${first.adminToken}` } });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ id: bob.id, status: 'broken' });
    // Its grant was already revoked at the provider: RFC 7009 answers 200 for an unknown token.
    expect((await provider.stats()).revocations).toBe(revocations + 1);
    expect(await account('bob')).toBeUndefined();
  });

  it('authenticates to the provider with private_key_jwt when the connector has a key instead of a secret', async () => {
    await seedConnector(pool, 'codehost-keys', OPERATIONS, provider.issuer);
    await setConnectorCredential(pool, first.runtime.masterKey, 'codehost-keys', {
      type: 'oauth2_authorization_code',
      authorization_url: `${provider.issuer}/auth`,
      token_url: `${provider.issuer}/token`,
      revocation_url: `${provider.issuer}/token/revocation`,
      issuer: provider.issuer,
      client_id: 'writ-upstream-keys',
      private_key_jwt: { jwk: privateJwk },
      scopes: ['repo:read'],
    });
    const link = await sendJson(
      'POST',
      `${first.issuer}/v1/connections/links`,
      { connector_id: 'codehost-keys', user_token: idTokens.carol },
      await tasksToken(first, orchestrator),
    );
    const jar = new CookieJar();
    const callback = await loginAndConsent(link.body.url, 'carol', `${first.issuer}/connect/callback`, jar);
    expect((await fetch(callback, { headers: { cookie: jar.header() } })).status).toBe(200);
    const allowed = [{ type: 'connector', connector: 'codehost-keys', actions: ['me.get'] }];
    const task = await taskFor({ user_token: idTokens.carol, allowed });
    const credential = (await tokenRequest(first.issuer, agent, exchangeFields(task.body.task_token, allowed))).body.access_token;
    await pool.query(`UPDATE connected_accounts SET access_expires_at = now() - interval '1 minute' WHERE connector_id = 'codehost-keys'`);
    const response = await http(`${first.gatewayUrl}/connectors/codehost-keys/api/me`, { headers: { authorization: `Bearer ${credential}` } });
    expect(response.status).toBe(200);
    expect(response.body.account).toBe('carol');
    const { rows } = await pool.query<{ id: string }>(`SELECT id FROM connected_accounts WHERE connector_id = 'codehost-keys'`);
    const removed = await http(`${first.issuer}/v1/me/connections/${rows[0].id}`, { method: 'DELETE', headers: { authorization: `Bearer ${idTokens.carol}` } });
    expect(removed.body.upstream_revocation).toBe('revoked');
  });

  it('disconnects: the user only their own, revoked at the upstream, audited', async () => {
    const alice = await account('alice');
    const stolen = await http(`${first.issuer}/v1/me/connections/${alice.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${idTokens.bob}` } });
    expect(stolen.status).toBe(404);
    const { refresh_token } = sealedTokens(alice, 'alice');
    const { revocations } = await provider.stats();
    const response = await http(`${first.issuer}/v1/me/connections/${alice.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${idTokens.alice}` } });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ id: alice.id, upstream_revocation: 'revoked' });
    expect((await provider.stats()).revocations).toBe(revocations + 1);
    // The grant is gone at the provider: its refresh token no longer works.
    const refresh = await postForm(
      `${provider.issuer}/token`,
      { grant_type: 'refresh_token', refresh_token: refresh_token! },
      {
        authorization: `Basic ${Buffer.from(`writ-upstream:${provider.upstreamSecret}`).toString('base64')}`,
      },
    );
    expect(refresh.body.error).toBe('invalid_grant');
    const call = await callMe(await credentialForUser('alice'));
    expect(call.status).toBe(403);
    expect(call.body.error_description).toMatch(/has not connected/);
    const { rows } = await pool.query<{ type: string; data: any }>(
      `SELECT type, data FROM audit_events WHERE type IN ('connection.disconnected', 'connection.upstream_revoked') AND data->'user'->>'sub' = 'alice' ORDER BY seq`,
    );
    expect(rows.map((row) => row.type)).toEqual(['connection.disconnected', 'connection.upstream_revoked']);
    expect(rows[1].data).toMatchObject({ result: 'revoked' });
  });

  /** A connector with connected accounts, one per user. */
  async function connectorWithUsers(id: string, users: string[]): Promise<void> {
    await seedUserConnector(id);
    for (const user of users) {
      const link = await sendJson(
        'POST',
        `${first.issuer}/v1/connections/links`,
        { connector_id: id, user_token: idTokens[user] },
        await tasksToken(first, orchestrator),
      );
      const jar = new CookieJar();
      const callback = await loginAndConsent(link.body.url, user, `${first.issuer}/connect/callback`, jar);
      expect((await fetch(callback, { headers: { cookie: jar.header() } })).status).toBe(200);
    }
  }

  it("deleting a connector revokes every user's grant at the upstream, each audited, none left valid", async () => {
    await connectorWithUsers('codehost-gone', ['bob', 'carol']);
    const { rows: connected } = await pool.query<{ id: string; tokens_sealed: Buffer; user_issuer: string; user_subject: string }>(
      `SELECT id, tokens_sealed, user_issuer, user_subject FROM connected_accounts WHERE connector_id = 'codehost-gone' ORDER BY user_subject`,
    );
    expect(connected.map((row) => row.user_subject)).toEqual(['bob', 'carol']);
    const refreshTokens = connected.map(
      (row) =>
        (
          JSON.parse(
            first.runtime.masterKey
              .unseal(
                row.tokens_sealed,
                accountSealContext('codehost-gone', `${provider.issuer}/token`, { issuer: row.user_issuer, subject: row.user_subject }),
              )
              .toString('utf8'),
          ) as { refresh_token: string }
        ).refresh_token,
    );
    const { revocations } = await provider.stats();
    const removed = await http(`${first.adminUrl}/v1/connectors/codehost-gone`, { method: 'DELETE', headers: { authorization: `Bearer ${first.adminToken}` } });
    expect(removed.status).toBe(204);
    // The audited results first: if an upstream revocation failed, its reason is in them.
    expect((await pool.query(`SELECT 1 FROM connected_accounts WHERE connector_id = 'codehost-gone'`)).rowCount).toBe(0);
    const { rows } = await pool.query<{ type: string; data: any }>(
      `SELECT type, data FROM audit_events WHERE connector_id = 'codehost-gone' AND type IN ('admin.connector.deleted', 'connection.disconnected', 'connection.upstream_revoked') ORDER BY seq`,
    );
    expect(rows.map((row) => row.type)).toEqual([
      'admin.connector.deleted',
      'connection.disconnected',
      'connection.disconnected',
      'connection.upstream_revoked',
      'connection.upstream_revoked',
    ]);
    expect(rows[0].data).toMatchObject({ connections_removed: 2 });
    expect(rows[1].data).toMatchObject({ reason: 'connector deleted' });
    expect(rows.slice(3).map((row) => row.data.result)).toEqual(['revoked', 'revoked']);
    expect((await provider.stats()).revocations).toBe(revocations + 2);
    // Without the upstream revocation the rows would vanish by cascade, their grants still live at the provider.
    for (const refreshToken of refreshTokens) {
      const refresh = await postForm(
        `${provider.issuer}/token`,
        { grant_type: 'refresh_token', refresh_token: refreshToken },
        { authorization: `Basic ${Buffer.from(`writ-upstream:${provider.upstreamSecret}`).toString('base64')}` },
      );
      expect(refresh.body.error).toBe('invalid_grant');
    }
    expect(JSON.stringify(rows)).not.toContain(refreshTokens[0]);
  });

  it('revokes at the upstream with the credential read in the removal itself, even with no connection to spare', async () => {
    await connectorWithUsers('codehost-busy', ['alice']);
    const { revocations } = await provider.stats();
    // Every connection of the pool but one is taken: the removal's transaction gets the last.
    // A read of the credential outside that transaction would wait for it to commit, and find
    // no connector left.
    const held = await Promise.all(Array.from({ length: 9 }, () => pool.connect()));
    let removed: { status: number };
    try {
      removed = await http(`${first.adminUrl}/v1/connectors/codehost-busy`, { method: 'DELETE', headers: { authorization: `Bearer ${first.adminToken}` } });
    } finally {
      for (const client of held) client.release();
    }
    expect(removed.status).toBe(204);
    const { rows } = await pool.query<{ data: { result: string } }>(
      `SELECT data FROM audit_events WHERE connector_id = 'codehost-busy' AND type = 'connection.upstream_revoked' ORDER BY seq`,
    );
    expect(rows.map((row) => row.data.result)).toEqual(['revoked']);
    expect((await provider.stats()).revocations).toBe(revocations + 1);
  });

  /** A gateway credential for `user`'s task on connector `id`. */
  async function credentialOn(id: string, user: string): Promise<string> {
    const allowed = [{ type: 'connector', connector: id, actions: ['me.get'] }];
    const task = await taskFor({ user_token: idTokens[user], allowed });
    expect(task.status).toBe(201);
    return (await tokenRequest(first.issuer, agent, exchangeFields(task.body.task_token, allowed))).body.access_token;
  }

  it('while a refresh waits for the provider no database session is held for it, and other calls are served', async () => {
    await connectorWithUsers('codehost-held', ['carol', 'alice']);
    const [carol, alice] = [await credentialOn('codehost-held', 'carol'), await credentialOn('codehost-held', 'alice')];
    await pool.query(
      `UPDATE connected_accounts SET access_expires_at = now() - interval '1 minute' WHERE connector_id = 'codehost-held' AND user_subject = 'carol'`,
    );
    try {
      const { heldTokenRequests, refreshes } = await provider.stats();
      await provider.holdToken();
      const pending = http(`${first.gatewayUrl}/connectors/codehost-held/api/me`, { headers: { authorization: `Bearer ${carol}` } });
      expect(
        (
          await eventually(
            () => provider.stats(),
            (stats) => stats.heldTokenRequests > heldTokenRequests,
          )
        ).heldTokenRequests,
      ).toBe(heldTokenRequests + 1);
      // The refresh holds a lease on the row, not a transaction (it used to be an idle session holding FOR UPDATE).
      const { rows: idle } = await pool.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%' AND query ILIKE '%connected_accounts%'`,
      );
      expect(idle).toEqual([]);
      const next = await http(`${first.gatewayUrl}/connectors/codehost-held/api/me`, { headers: { authorization: `Bearer ${alice}` } });
      expect(next.status).toBe(200);
      expect(next.body.account).toBe('alice');
      await provider.releaseToken();
      const response = await pending;
      expect(response.status).toBe(200);
      expect(response.body.account).toBe('carol');
      expect((await provider.stats()).refreshes).toBe(refreshes + 1);
    } finally {
      await provider.releaseToken();
    }
  });

  /** Carol's connect callback for `connectorId`, answered once `change` ran while its code exchange waited at the provider. */
  async function callbackWhile(connectorId: string, change: () => Promise<void>): Promise<Response> {
    const link = await sendJson(
      'POST',
      `${first.issuer}/v1/connections/links`,
      { connector_id: connectorId, user_token: idTokens.carol },
      await tasksToken(first, orchestrator),
    );
    expect(link.status).toBe(201);
    const jar = new CookieJar();
    const callback = await loginAndConsent(link.body.url, 'carol', `${first.issuer}/connect/callback`, jar);
    const { heldTokenRequests } = await provider.stats();
    await provider.holdToken();
    try {
      const pending = fetch(callback, { headers: { cookie: jar.header() } });
      await eventually(
        () => provider.stats(),
        (stats) => stats.heldTokenRequests > heldTokenRequests,
      );
      await change();
      await provider.releaseToken();
      return await pending;
    } finally {
      await provider.releaseToken();
    }
  }

  it('a connector removed while the callback redeems the code: 404, nothing stored, the grant revoked at the provider', async () => {
    await seedUserConnector('codehost-vanishing');
    const { revocations } = await provider.stats();
    // The code exchange waits at the provider while an admin removes the connector.
    const page = await callbackWhile('codehost-vanishing', async () => {
      const removed = await http(`${first.adminUrl}/v1/connectors/codehost-vanishing`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${first.adminToken}` },
      });
      expect(removed.status).toBe(204);
    });
    expect(page.status).toBe(404);
    expect(await page.text()).not.toMatch(/connected to/);
    expect((await pool.query(`SELECT 1 FROM connected_accounts WHERE connector_id = 'codehost-vanishing'`)).rowCount).toBe(0);
    const { rows } = await pool.query<{ type: string; data: any }>(
      `SELECT type, data FROM audit_events WHERE connector_id = 'codehost-vanishing' AND type LIKE 'connection.%' ORDER BY seq`,
    );
    expect(rows.map((row) => row.type)).toEqual(['connection.link_issued', 'connection.link_opened', 'connection.connect_failed']);
    expect(rows[2].data).toMatchObject({ reason: 'connector deleted', upstream_revocation: 'revoked', user: { sub: 'carol' } });
    expect((await provider.stats()).revocations).toBe(revocations + 1);
  });

  it('a connector moved to another base_url while the callback redeems the code: nothing stored, the grant revoked where it was made', async () => {
    await seedUserConnector('codehost-moving');
    const attacker = await startMockUpstream(() => true, {});
    try {
      const { revocations } = await provider.stats();
      const page = await callbackWhile('codehost-moving', async () => {
        // An operator moves the connector to a host of theirs (with an app credential: the same provider's endpoints).
        const moved = await sendJson(
          'PATCH',
          `${first.adminUrl}/v1/connectors/codehost-moving`,
          {
            base_url: attacker.url,
            credential: {
              type: 'oauth2_authorization_code',
              authorization_url: `${provider.issuer}/auth`,
              token_url: `${provider.issuer}/token`,
              revocation_url: `${provider.issuer}/token/revocation`,
              client_id: 'writ-upstream',
              client_secret: 'not-the-real-secret',
              scopes: ['repo:read'],
            },
          },
          first.adminToken,
        );
        expect(moved.status).toBe(200);
      });
      expect(page.status).toBe(400);
      expect(await page.text()).not.toMatch(/connected to/);
      // Nothing the new base_url could be sent: no connection stored for the tokens redeemed under the old destination.
      expect((await pool.query(`SELECT 1 FROM connected_accounts WHERE connector_id = 'codehost-moving'`)).rowCount).toBe(0);
      const { rows } = await pool.query<{ type: string; data: any }>(
        `SELECT type, data FROM audit_events WHERE connector_id = 'codehost-moving' AND type = 'connection.connect_failed' ORDER BY seq`,
      );
      expect(rows.map((row) => row.data)).toEqual([
        expect.objectContaining({ reason: 'connector credential changed', upstream_revocation: 'revoked', user: expect.objectContaining({ sub: 'carol' }) }),
      ]);
      expect((await provider.stats()).revocations).toBe(revocations + 1);
    } finally {
      await attacker.close();
    }
  });

  it('a connector removed between the check and the insert of a connect link: 404, no link', async () => {
    await seedUserConnector('codehost-racing');
    const accounts = first.apps[0].get(ConnectedAccounts, { strict: false });
    const read = accounts.credentialOf.bind(accounts);
    // The removal lands right after createLink found the connector.
    const spy = jest.spyOn(accounts, 'credentialOf').mockImplementationOnce(async (id, db) => {
      const credential = await read(id, db);
      await pool.query(`DELETE FROM connectors WHERE id = 'codehost-racing'`);
      return credential;
    });
    try {
      const response = await sendJson(
        'POST',
        `${first.issuer}/v1/connections/links`,
        { connector_id: 'codehost-racing', user_token: idTokens.carol },
        await tasksToken(first, orchestrator),
      );
      expect(spy).toHaveBeenCalled();
      expect(response.status).toBe(404);
      expect(response.body.error_description).toMatch(/no connector codehost-racing/);
    } finally {
      spy.mockRestore();
    }
    expect((await pool.query(`SELECT 1 FROM connect_links WHERE connector_id = 'codehost-racing'`)).rowCount).toBe(0);
    expect((await pool.query(`SELECT 1 FROM audit_events WHERE connector_id = 'codehost-racing' AND type = 'connection.link_issued'`)).rowCount).toBe(0);
  });
});

function decodeProtectedKid(token: string): string {
  return JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).kid;
}
