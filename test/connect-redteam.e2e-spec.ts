import type { ServerResponse } from 'node:http';
import { accountSealContext, ConnectedAccounts } from '@writ/accounts';
import { startConnecting, seedCodehost } from './support/connect-flow';
import { MockUpstream, ReceivedRequest, startMockUpstream } from './support/mock-upstreams';
import { seedConnector, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const IDP = 'https://idp.example';

/**
 * Red-team probes of Writ as an OAuth client (RFC 6749, 7636, 9207, 9700) at the connect
 * callback, against a scripted provider: the token response validated, nothing echoed
 * unescaped, an existing connection untouched by a failed attempt, concurrent completions.
 */
describe('connect flow: token response and callback probes', () => {
  let services: TestServices;
  let provider: MockUpstream;
  let answer: (request: ReceivedRequest, response: ServerResponse) => void | Promise<void>;
  let issued = 0;

  const tokens = (extra: Record<string, unknown> = {}) => {
    issued += 1;
    return { access_token: `at-${issued}`, refresh_token: `rt-${issued}`, token_type: 'Bearer', expires_in: 3600, ...extra };
  };
  const json = (response: ServerResponse, status: number, body: unknown) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  };

  beforeAll(async () => {
    provider = await startMockUpstream(() => true, {
      'POST /token': (request, response) => answer(request, response),
      'POST /elsewhere': (_request, response) => json(response, 200, tokens()),
    });
    services = await startTestServices();
    await seedCodehost(services, provider.url, 'provider-client-secret-41c9');
  });

  afterAll(async () => {
    await services?.close();
    await provider?.close();
  });

  async function row(subject: string, connector = 'codehost') {
    const { rows } = await services.runtime.pool.query<{ status: string; scopes: string[]; tokens_sealed: Buffer }>(
      `SELECT status, scopes, tokens_sealed FROM connected_accounts WHERE connector_id = $1 AND user_subject = $2`,
      [connector, subject],
    );
    if (!rows[0]) return undefined;
    const context = accountSealContext(connector, `${provider.url}/token`, { issuer: IDP, subject });
    return { ...rows[0], tokens: JSON.parse(services.runtime.masterKey.unseal(rows[0].tokens_sealed, context).toString('utf8')) };
  }

  it('a narrower scope granted than asked for is recorded as granted', async () => {
    await seedConnector(services.runtime.pool, 'narrow', [], provider.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'narrow', {
      type: 'oauth2_authorization_code',
      authorization_url: `${provider.url}/authorize`,
      token_url: `${provider.url}/token`,
      client_id: 'writ-upstream',
      client_secret: 's',
      scopes: ['repo:read', 'repo:write'],
    });
    answer = (_request, response) => json(response, 200, tokens({ scope: 'repo:read' }));
    const { callback, cookie } = await startConnecting(services, 'narrow-user', 'narrow');
    expect((await fetch(callback, { headers: { cookie } })).status).toBe(200);
    expect((await row('narrow-user', 'narrow'))?.scopes).toEqual(['repo:read']);
  });

  it('scope and query in the connector config cannot inject authorization request parameters', async () => {
    await seedConnector(services.runtime.pool, 'injected', [], provider.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'injected', {
      type: 'oauth2_authorization_code',
      authorization_url: `${provider.url}/authorize?redirect_uri=https://evil.example/cb&code_challenge_method=plain&state=fixed&response_type=token`,
      token_url: `${provider.url}/token`,
      client_id: 'writ-upstream',
      client_secret: 's',
      scopes: ['repo:read&redirect_uri=https://evil.example/cb'],
    });
    const { authorize } = await startConnecting(services, 'injected-user', 'injected');
    expect(authorize.searchParams.getAll('redirect_uri')).toEqual([`${services.issuer}/connect/callback`]);
    expect(authorize.searchParams.getAll('code_challenge_method')).toEqual(['S256']);
    expect(authorize.searchParams.getAll('response_type')).toEqual(['code']);
    expect(authorize.searchParams.getAll('state')).toHaveLength(1);
    expect(authorize.searchParams.get('state')).not.toBe('fixed');
    expect(authorize.searchParams.getAll('scope')).toEqual(['repo:read&redirect_uri=https://evil.example/cb']);
  });

  it.each([
    ['no token_type', { token_type: undefined }],
    ['a negative expires_in', { expires_in: -5 }],
    ['a non-numeric expires_in', { expires_in: 'soon' }],
    ['an empty access_token', { access_token: '' }],
  ])('a token response with %s: a 400 page, nothing stored', async (name, extra) => {
    answer = (_request, response) => json(response, 200, tokens(extra));
    const subject = `bad-${name.replace(/\W/g, '-')}`;
    const { callback, cookie } = await startConnecting(services, subject);
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(400);
    expect(await row(subject)).toBeUndefined();
  });

  it('a token_type the provider made up is its unacceptable answer (400), never shown as its outage (503)', async () => {
    answer = (_request, response) => json(response, 200, tokens({ token_type: 'mac' }));
    const { callback, cookie } = await startConnecting(services, 'mac-user');
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(400);
    expect(page.headers.get('retry-after')).toBeNull();
    expect(await page.text()).toMatch(/did not connect the account/);
    const { rows } = await services.runtime.pool.query<{ outcome: string; data: Record<string, unknown> }>(
      `SELECT outcome, data FROM audit_events WHERE type = 'connection.connect_failed' AND data->'user'->>'sub' = 'mac-user'`,
    );
    expect(rows).toEqual([expect.objectContaining({ outcome: 'failure', data: expect.objectContaining({ error: 'invalid_response' }) })]);
    expect(JSON.stringify(rows)).not.toMatch(/at-\d/);
    expect(await row('mac-user')).toBeUndefined();
  });

  it('an implicit or hybrid response (a token in the callback): a 400 page, no token request, never an outage', async () => {
    const { callback, cookie } = await startConnecting(services, 'hybrid-user');
    callback.searchParams.set('id_token', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.');
    const before = provider.received.length;
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(400);
    expect(page.headers.get('retry-after')).toBeNull();
    expect(provider.received.length).toBe(before);
    expect(await row('hybrid-user')).toBeUndefined();
  });

  it('an unsigned id_token in the token response is not trusted', async () => {
    const none = (claims: Record<string, unknown>) =>
      `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
    const now = Math.floor(Date.now() / 1000);
    answer = (_request, response) =>
      json(response, 200, tokens({ id_token: none({ iss: 'https://evil.example', sub: 'someone-else', aud: 'writ-upstream', iat: now, exp: now + 600 }) }));
    const { callback, cookie } = await startConnecting(services, 'id-token-user');
    const page = await fetch(callback, { headers: { cookie } });
    expect([200, 400]).toContain(page.status);
    const stored = await row('id-token-user');
    if (stored) expect(JSON.stringify(stored.tokens)).not.toContain('someone-else');
  });

  it("the token endpoint's redirect is not followed: nothing stored", async () => {
    answer = (_request, response) => {
      response.writeHead(307, { location: `${provider.url}/elsewhere` });
      response.end();
    };
    const { callback, cookie } = await startConnecting(services, 'redirected-user');
    const before = provider.received.filter((request) => request.url === '/elsewhere').length;
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(400);
    expect(provider.received.filter((request) => request.url === '/elsewhere').length).toBe(before);
    expect(await row('redirected-user')).toBeUndefined();
  });

  it('an error response on a new attempt leaves the existing connection as it was; nothing reflected unescaped', async () => {
    answer = (_request, response) => json(response, 200, tokens());
    const first = await startConnecting(services, 'kept-user');
    expect((await fetch(first.callback, { headers: { cookie: first.cookie } })).status).toBe(200);
    const before = await row('kept-user');
    const { callback, cookie } = await startConnecting(services, 'kept-user');
    callback.searchParams.delete('code');
    callback.searchParams.set('error', '<script>alert(1)</script>');
    callback.searchParams.set('error_description', '<img src=x onerror=alert(2)>');
    const page = await fetch(callback, { headers: { cookie } });
    const text = await page.text();
    expect(page.status).toBe(400);
    expect(text).not.toContain('<script>');
    expect(text).not.toContain('<img');
    const after = await row('kept-user');
    expect(after).toEqual(before);
  });

  it('an error code outside the RFC 6749 character set is neither shown nor audited as the provider sent it', async () => {
    const { callback, cookie } = await startConnecting(services, 'odd-error-user');
    callback.searchParams.delete('code');
    callback.searchParams.set('error', 'access_denied\u202e\r\nforged: call +1 555 0100 "now"');
    const page = await fetch(callback, { headers: { cookie } });
    const text = await page.text();
    expect(page.status).toBe(400);
    expect(text).not.toContain('forged');
    expect(text).toMatch(/did not connect the account/);
    const { rows } = await services.runtime.pool.query<{ data: Record<string, unknown> }>(
      `SELECT data FROM audit_events WHERE type = 'connection.connect_failed' AND data->'user'->>'sub' = 'odd-error-user'`,
    );
    expect(rows).toEqual([{ data: expect.objectContaining({ error: 'invalid_response' }) }]);
    expect(JSON.stringify(rows)).not.toContain('forged');
  });

  it('an attempt whose link expired before the callback: refused, no token request', async () => {
    answer = (_request, response) => json(response, 200, tokens());
    const { callback, cookie } = await startConnecting(services, 'late-user');
    await services.runtime.pool.query(`UPDATE connect_links SET expires_at = now() - interval '1 second' WHERE user_subject = 'late-user'`);
    const before = provider.received.length;
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(400);
    expect(provider.received.length).toBe(before);
    expect(await row('late-user')).toBeUndefined();
  });

  it('two links for one user completed at once: one active connection with a consistent token pair', async () => {
    answer = async (_request, response) => {
      const body = tokens();
      await new Promise((resolve) => setTimeout(resolve, 50));
      json(response, 200, body);
    };
    const attempts = await Promise.all(Array.from({ length: 4 }, () => startConnecting(services, 'racing-user')));
    const pages = await Promise.all(attempts.map(({ callback, cookie }) => fetch(callback, { headers: { cookie } })));
    expect(pages.map((page) => page.status)).toEqual([200, 200, 200, 200]);
    const { rows } = await services.runtime.pool.query(`SELECT status FROM connected_accounts WHERE user_subject = 'racing-user'`);
    expect(rows).toEqual([{ status: 'active' }]);
    const stored = await row('racing-user');
    expect(stored?.tokens.refresh_token).toBe(stored?.tokens.access_token.replace('at-', 'rt-'));
  });
});

describe('connect callback: throttled', () => {
  let services: TestServices;

  beforeAll(async () => {
    services = await startTestServices({
      env: { WRIT_THROTTLE_WINDOW_SECONDS: '3600', WRIT_THROTTLE_SOURCE_FAILURES: '1', WRIT_THROTTLE_CLIENT_FAILURES: '1', WRIT_THROTTLE_AUDIT_EVENTS: '1' },
    });
  });
  afterAll(async () => {
    await services?.close();
  });

  it("the callback's 429 page (its URL holds a code) has the page headers too: no Referer elsewhere, never framed", async () => {
    for (let attempt = 0; attempt < 3; attempt += 1) await fetch(`${services.issuer}/connect/callback?state=guess-${attempt}&code=x`);
    const page = await fetch(`${services.issuer}/connect/callback?state=victim-state&code=victim-code`);
    expect(page.status).toBe(429);
    expect(page.headers.get('referrer-policy')).toBe('same-origin');
    expect(page.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
  });
});

/**
 * Login CSRF past the link's page: mallory opens her own link in her own browser, then sends
 * dave's browser to the provider's authorization URL it answered, where dave is signed in and
 * has authorised Writ; the provider sends him back to the callback with his code and her
 * `state`. Only the flow's cookie stops his account being connected to her user, so it must
 * not be one she can set in his browser (cookie tossing from a sibling subdomain, or any http
 * answer on the host): on an https issuer it is a `__Host-` cookie.
 */
describe('connect flow on an https issuer: the browser binding cannot be tossed', () => {
  let services: TestServices;
  let provider: MockUpstream;

  beforeAll(async () => {
    provider = await startMockUpstream(() => true, {
      'POST /token': (_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ access_token: 'at-dave', refresh_token: 'rt-dave', token_type: 'Bearer', expires_in: 3600 }));
      },
    });
    services = await startTestServices({ env: { WRIT_ISSUER: 'https://writ.test' } });
    await seedCodehost(services, provider.url, 'provider-client-secret-77d1');
  });
  afterAll(async () => {
    await services?.close();
    await provider?.close();
  });

  /** mallory's own browser opens her link: the state the provider will send back, and her cookie (name=value). */
  async function malloryOpens(): Promise<{ state: string; setCookie: string }> {
    const accounts = services.apps[0].get(ConnectedAccounts, { strict: false });
    const link = await accounts.createLink('codehost', { issuer: IDP, subject: 'mallory' }, { type: 'system', id: 'test' });
    const opened = await fetch(link.url.replace(services.issuer, services.authUrl), {
      method: 'POST',
      redirect: 'manual',
      headers: { origin: services.issuer },
    });
    expect(opened.status).toBe(303);
    return { state: new URL(opened.headers.get('location')!).searchParams.get('state')!, setCookie: opened.headers.getSetCookie()[0] };
  }

  const callback = (state: string) => `${services.authUrl}/connect/callback?code=code-dave&state=${encodeURIComponent(state)}`;
  const connected = async () => (await services.runtime.pool.query(`SELECT 1 FROM connected_accounts WHERE user_subject = 'mallory'`)).rowCount;

  it('the cookie is __Host- prefixed: Secure, Path=/, no Domain', async () => {
    const { setCookie } = await malloryOpens();
    expect(setCookie).toMatch(/^__Host-writ_connect=[A-Za-z0-9_-]{43}; /);
    expect(setCookie).toMatch(/; Path=\/;/);
    expect(setCookie).toMatch(/; Secure/);
    expect(setCookie).toMatch(/; HttpOnly/);
    expect(setCookie).not.toMatch(/domain=/i);
  });

  it("her value under the unprefixed name, tossed into dave's browser, does not complete her attempt there", async () => {
    const { state, setCookie } = await malloryOpens();
    const value = setCookie.split(';')[0].split('=').slice(1).join('=');
    const page = await fetch(callback(state), { headers: { cookie: `writ_connect=${value}` } });
    expect(page.status).toBe(400);
    expect(await page.text()).toMatch(/another browser/);
    expect(await connected()).toBe(0);
  });

  it('her own browser, with the __Host- cookie, completes it', async () => {
    const { state, setCookie } = await malloryOpens();
    const page = await fetch(callback(state), { headers: { cookie: setCookie.split(';')[0] } });
    expect(page.status).toBe(200);
    expect(page.headers.getSetCookie()[0]).toMatch(/^__Host-writ_connect=; Path=\/; HttpOnly; SameSite=Lax; Max-Age=0; Secure$/);
    expect(await connected()).toBe(1);
  });
});
