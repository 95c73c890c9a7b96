import type { ServerResponse } from 'node:http';
import { startConnecting as connectFlow, seedCodehost } from './support/connect-flow';
import { MockUpstream, ReceivedRequest, startMockUpstream } from './support/mock-upstreams';
import { startTestServices, TestServices } from './support/test-services';

const CLIENT_SECRET = 'provider-client-secret-8d2e41';
/** What the failing provider puts in its error bodies: never shown to the user. */
const PROVIDER_BODY = 'provider-internal-trace-7f3a';

type Behaviour = 'unavailable' | 'close' | 'invalid_grant' | 'slow-5xx';

/**
 * The end user's browser comes back to the connect callback while the provider's token
 * endpoint is down (a 503, a closed connection) or refuses the code (`invalid_grant`). An
 * outage is a 503 page with `Retry-After` that echoes nothing of the provider and tells the
 * user to start again with a new link (the state is spent: the code may have been redeemed);
 * a refusal stays a 400. Every outcome is audited, nothing is stored.
 */
describe('connect callback: the provider down or refusing', () => {
  let services: TestServices;
  let provider: MockUpstream;
  let behaviour: Behaviour = 'unavailable';

  const tokenRoute = (_request: ReceivedRequest, response: ServerResponse) => {
    if (behaviour === 'close') {
      response.socket?.destroy();
      return;
    }
    const [status, body] =
      behaviour === 'invalid_grant'
        ? [400, { error: 'invalid_grant', error_description: `code expired (${PROVIDER_BODY})` }]
        : [behaviour === 'slow-5xx' ? 502 : 503, { error: 'temporarily_unavailable', error_description: PROVIDER_BODY }];
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  };

  beforeAll(async () => {
    provider = await startMockUpstream(() => true, { 'POST /token': tokenRoute });
    services = await startTestServices();
    await seedCodehost(services, provider.url, CLIENT_SECRET);
  });

  afterAll(async () => {
    await services?.close();
    await provider?.close();
  });

  /**
   * A user's browser: opens a fresh connect link (issued by the library, as the links endpoint
   * does) and continues on its page, is sent to the provider, and comes back to the callback with a code and the state.
   */
  async function startConnecting(subject: string): Promise<{ callback: string; cookie: string }> {
    const { authorize, callback, cookie } = await connectFlow(services, subject);
    expect(authorize.origin + authorize.pathname).toBe(`${provider.url}/authorize`);
    return { callback: callback.toString(), cookie };
  }

  async function failures(subject: string): Promise<Array<{ outcome: string; data: Record<string, unknown> }>> {
    const { rows } = await services.runtime.pool.query<{ outcome: string; data: Record<string, unknown> }>(
      `SELECT outcome, data FROM audit_events WHERE type = 'connection.connect_failed' AND data->'user'->>'sub' = $1 ORDER BY seq`,
      [subject],
    );
    return rows;
  }

  const stored = async (subject: string) => (await services.runtime.pool.query(`SELECT 1 FROM connected_accounts WHERE user_subject = $1`, [subject])).rowCount;

  it.each([
    ['answers 503', 'unavailable', 'upstream_unavailable'],
    ['answers 502', 'slow-5xx', 'upstream_unavailable'],
    ['closes the connection', 'close', 'upstream_unreachable'],
  ] as const)('the token endpoint %s: a 503 page with Retry-After, nothing echoed, start again', async (_name, mode, code) => {
    behaviour = mode;
    const subject = `user-${mode}`;
    const { callback, cookie } = await startConnecting(subject);
    const before = provider.received.length;
    const page = await fetch(callback, { headers: { cookie } });
    const text = await page.text();
    expect(provider.received.length).toBe(before + 1);
    expect(page.status).toBe(503);
    expect(page.headers.get('retry-after')).toBe('30');
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.headers.get('cache-control')).toMatch(/no-store/);
    expect(text).toMatch(/<h1>Not connected<\/h1>/);
    expect(text).toMatch(/could not be reached/);
    expect(text).toMatch(/ask for a new connect link/);
    for (const secret of [PROVIDER_BODY, CLIENT_SECRET, `code-${subject}`, 'temporarily_unavailable']) expect(text).not.toContain(secret);
    expect(await stored(subject)).toBe(0);
    const events = await failures(subject);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ outcome: 'error', data: { error: code, retry: 'new_link' } });
    expect(JSON.stringify(events[0].data)).not.toContain(PROVIDER_BODY);

    // The attempt is spent: coming back to the callback (a reload) does not send the code again.
    behaviour = 'unavailable';
    const again = await fetch(callback, { headers: { cookie } });
    expect(again.status).toBe(400);
    expect(await again.text()).toMatch(/already used or expired/);
    expect(provider.received.length).toBe(before + 1);
  });

  it.each(['temporarily_unavailable', 'server_error'])(
    'the provider sends the browser back with error=%s: a 503 page, no token request, start again',
    async (error) => {
      const subject = `user-redirect-${error}`;
      const { callback, cookie } = await startConnecting(subject);
      const url = new URL(callback);
      url.searchParams.delete('code');
      url.searchParams.set('error', error);
      url.searchParams.set('error_description', PROVIDER_BODY);
      const before = provider.received.length;
      const page = await fetch(url, { headers: { cookie } });
      const text = await page.text();
      expect(page.status).toBe(503);
      expect(page.headers.get('retry-after')).toBe('30');
      expect(text).toMatch(/ask for a new connect link/);
      expect(text).not.toContain(PROVIDER_BODY);
      expect(provider.received.length).toBe(before);
      expect(await failures(subject)).toEqual([
        expect.objectContaining({ outcome: 'error', data: expect.objectContaining({ error: 'upstream_unavailable' }) }),
      ]);
    },
  );

  it('the provider sends the browser back with error=access_denied: a 400 page', async () => {
    const { callback, cookie } = await startConnecting('user-denied');
    const url = new URL(callback);
    url.searchParams.delete('code');
    url.searchParams.set('error', 'access_denied');
    const page = await fetch(url, { headers: { cookie } });
    expect(page.status).toBe(400);
    expect(page.headers.get('retry-after')).toBeNull();
    expect(await page.text()).toMatch(/refused the authorization: access_denied/);
  });

  it('the provider refuses the code (invalid_grant): a 400 page, no Retry-After, nothing stored', async () => {
    behaviour = 'invalid_grant';
    const { callback, cookie } = await startConnecting('user-refused');
    const page = await fetch(callback, { headers: { cookie } });
    const text = await page.text();
    expect(page.status).toBe(400);
    expect(page.headers.get('retry-after')).toBeNull();
    expect(text).toMatch(/did not connect the account: the upstream answered invalid_grant/);
    expect(await stored('user-refused')).toBe(0);
    expect(await failures('user-refused')).toEqual([
      expect.objectContaining({ outcome: 'failure', data: expect.objectContaining({ error: 'invalid_grant' }) }),
    ]);
  });
});
