import { ConnectedAccounts } from '@writ/accounts';
import { startConnecting as connectFlow, seedCodehost } from './support/connect-flow';
import { MockUpstream, startMockUpstream } from './support/mock-upstreams';
import { startTestServices, TestServices } from './support/test-services';

/**
 * Attacks on Writ as an OAuth client of a connector's provider (RFC 9700). Mix-up (section 4.4): a connector's provider (malicious, or compromised) sends the
 * browser of a user connecting to it on to another provider, whose code comes back to Writ's one
 * callback with the first connector's `state`; Writ would redeem it at the first provider's token
 * endpoint, handing it the other provider's code and the PKCE verifier. A connector with
 * `issuer` checks `iss` exactly (RFC 9207, test/connected-accounts.e2e-spec.ts). One without
 * must still not ignore an `iss` that names another provider than the one it sent the user to.
 */
describe('connect flow attacks', () => {
  let services: TestServices;
  let provider: MockUpstream;

  beforeAll(async () => {
    provider = await startMockUpstream(() => true, {
      'POST /token': (_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ access_token: 'at-1', token_type: 'Bearer', expires_in: 3600 }));
      },
    });
    services = await startTestServices();
    // No `issuer`: the provider's RFC 9207 support is not known to Writ.
    await seedCodehost(services, provider.url, 'provider-client-secret-2b7e');
  });

  afterAll(async () => {
    await services?.close();
    await provider?.close();
  });

  async function startConnecting(subject: string): Promise<{ callback: URL; cookie: string }> {
    return connectFlow(services, subject);
  }

  const tokenRequests = () => provider.received.filter((request) => request.url === '/token').length;
  const stored = async (subject: string) => (await services.runtime.pool.query(`SELECT 1 FROM connected_accounts WHERE user_subject = $1`, [subject])).rowCount;

  it('an iss of another provider than the one the user was sent to: a 400 page, the code never sent to the token endpoint', async () => {
    const { callback, cookie } = await startConnecting('mixed-up');
    callback.searchParams.set('iss', 'https://git.honest.example');
    const before = tokenRequests();
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(400);
    expect(await page.text()).toMatch(/did not connect the account/);
    expect(tokenRequests()).toBe(before);
    expect(await stored('mixed-up')).toBe(0);
  });

  it("the callback's page (its URL holds the code) loads nothing, is never framed, sends no Referer elsewhere and is not stored", async () => {
    const { callback, cookie } = await startConnecting('page-headers');
    const page = await fetch(callback, { headers: { cookie } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('referrer-policy')).toBe('same-origin');
    expect(page.headers.get('cache-control')).toMatch(/no-store/);
  });

  it("an iss on the origin of the connector's own authorization endpoint, or none, still connects", async () => {
    const same = await startConnecting('same-origin-iss');
    same.callback.searchParams.set('iss', provider.url);
    expect((await fetch(same.callback, { headers: { cookie: same.cookie } })).status).toBe(200);
    expect(await stored('same-origin-iss')).toBe(1);
    const none = await startConnecting('no-iss');
    expect((await fetch(none.callback, { headers: { cookie: none.cookie } })).status).toBe(200);
    expect(await stored('no-iss')).toBe(1);
  });

  it('a link opened twice at once (two tabs, or a race with a stolen copy): one redirect, one attempt', async () => {
    const accounts = services.apps[0].get(ConnectedAccounts, { strict: false });
    const link = await accounts.createLink('codehost', { issuer: 'https://idp.example', subject: 'twice' }, { type: 'system', id: 'test' });
    const origin = new URL(services.issuer).origin;
    const answers = await Promise.all(Array.from({ length: 6 }, () => fetch(link.url, { method: 'POST', redirect: 'manual', headers: { origin } })));
    expect(answers.map((answer) => answer.status).sort()).toEqual([303, 400, 400, 400, 400, 400]);
  });

  it('one callback delivered twice at once: the code is redeemed once, one connection', async () => {
    const { callback, cookie } = await startConnecting('callback-twice');
    const before = tokenRequests();
    const pages = await Promise.all(Array.from({ length: 6 }, () => fetch(callback, { headers: { cookie } })));
    expect(pages.map((page) => page.status).sort()).toEqual([200, 400, 400, 400, 400, 400]);
    expect(tokenRequests()).toBe(before + 1);
    expect(await stored('callback-twice')).toBe(1);
  });
});
