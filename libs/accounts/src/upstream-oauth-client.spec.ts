import { once } from 'node:events';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import type { OAuth2AuthorizationCode } from '@writ/connectors';
import { Agent } from 'undici';
import { UpstreamOAuthClient, UpstreamOAuthError } from './upstream-oauth-client';

/** A real token endpoint on loopback; `answer` decides each refresh. */
describe('UpstreamOAuthClient.refresh against a real token endpoint', () => {
  let server: Server;
  let dispatcher: Agent;
  let client: UpstreamOAuthClient;
  let credential: OAuth2AuthorizationCode;
  let answer: (response: ServerResponse) => void;

  beforeAll(async () => {
    server = createServer((request, response) => {
      request.resume();
      request.on('end', () => answer(response));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    dispatcher = new Agent();
    client = new UpstreamOAuthClient(dispatcher);
    credential = {
      type: 'oauth2_authorization_code',
      authorization_url: `${origin}/auth`,
      token_url: `${origin}/token`,
      client_id: 'writ',
      client_secret: 'secret',
      scopes: ['read'],
    };
  });
  afterAll(async () => {
    server.closeAllConnections();
    server.close();
    await dispatcher.close();
  });

  const json = (status: number, body: string) => (response: ServerResponse) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(body);
  };

  const withRetryAfter = (status: number, retryAfter: string, body: string) => (response: ServerResponse) => {
    response.writeHead(status, { 'content-type': 'application/json', 'retry-after': retryAfter });
    response.end(body);
  };
  const refusal = (): Promise<UpstreamOAuthError> =>
    client.refresh(credential, 'rt', ['read']).then(
      () => Promise.reject(new Error('refreshed')),
      (error: UpstreamOAuthError) => error,
    );

  it.each([
    [503, '120', '{"error":"temporarily_unavailable"}', 120],
    [429, '45', '{"error":"slow_down"}', 45],
    [503, '99999', 'not json', 3600],
    [429, '30', 'x'.repeat(70 * 1024), 30],
  ])("carries a %d answer's Retry-After %s as the seconds to wait, capped at an hour", async (status, value, body, seconds) => {
    answer = withRetryAfter(status, value, body);
    const error = await refusal();
    expect(error).toMatchObject({ code: 'upstream_unavailable', refused: false, retryAfterSeconds: seconds });
  });

  it('carries an HTTP-date Retry-After as the seconds until it', async () => {
    answer = withRetryAfter(503, new Date(Date.now() + 300_000).toUTCString(), '{"error":"temporarily_unavailable"}');
    const { retryAfterSeconds } = await refusal();
    expect(retryAfterSeconds).toBeGreaterThan(295);
    expect(retryAfterSeconds).toBeLessThanOrEqual(300);
  });

  it.each([
    [503, 'later'],
    [503, '-1'],
    [500, '120'],
    [502, '120'],
  ])("ignores a %d answer's Retry-After %s", async (status, value) => {
    answer = withRetryAfter(status, value, '{"error":"server_error"}');
    const error = await refusal();
    expect(error).toMatchObject({ code: 'upstream_unavailable', refused: false });
    expect(error.retryAfterSeconds).toBeUndefined();
  });

  it.each(['1e300', '1e20'])('keeps a huge expires_in (%s) to a valid time at most a day away', async (expiresIn) => {
    answer = json(200, `{"access_token":"at","token_type":"Bearer","refresh_token":"rt2","expires_in":${expiresIn}}`);
    const tokens = await client.refresh(credential, 'rt', ['read']);
    expect(tokens.expiresAt).toBeInstanceOf(Date);
    expect(Number.isFinite(tokens.expiresAt!.getTime())).toBe(true);
    expect(tokens.expiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 24 * 3600_000);
  });

  it.each(['0', '1', '29', '"0"'])('believes a lifetime under a minute (expires_in %s) to be a minute', async (expiresIn) => {
    answer = json(200, `{"access_token":"at","token_type":"Bearer","refresh_token":"rt2","expires_in":${expiresIn}}`);
    const before = Date.now();
    const tokens = await client.refresh(credential, 'rt', ['read']);
    // Past the 30 s refresh margin: the token is used for a while before the next refresh.
    expect(tokens.expiresAt!.getTime()).toBeGreaterThanOrEqual(before + 60_000);
    expect(tokens.expiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 60_000);
  });

  it('keeps an expires_in above the floor as the provider said it', async () => {
    answer = json(200, '{"access_token":"at","token_type":"Bearer","refresh_token":"rt2","expires_in":600}');
    const tokens = await client.refresh(credential, 'rt', ['read']);
    expect(Math.round((tokens.expiresAt!.getTime() - Date.now()) / 1000)).toBe(600);
  });

  it('knows no expiry when the provider gives no expires_in', async () => {
    answer = json(200, '{"access_token":"at","token_type":"Bearer","refresh_token":"rt2"}');
    expect((await client.refresh(credential, 'rt', ['read'])).expiresAt).toBeNull();
  });

  it.each(['-5', '"soon"', 'true', '{}'])('refuses a negative or non-numeric expires_in (%s) as an unacceptable answer', async (expiresIn) => {
    answer = json(200, `{"access_token":"at","token_type":"Bearer","refresh_token":"rt2","expires_in":${expiresIn}}`);
    await expect(client.refresh(credential, 'rt', ['read'])).rejects.toMatchObject({ code: 'invalid_response', refused: true });
  });

  it.each([
    ['a 503 page', 503, '<h1>maintenance</h1>', 'text/html'],
    ['a 503 OAuth error', 503, '{"error":"temporarily_unavailable"}', 'application/json'],
    ['a 500 invalid_grant', 500, '{"error":"invalid_grant"}', 'application/json'],
    ['a 429', 429, '{"error":"slow_down"}', 'application/json'],
  ])('reads %s as the endpoint unavailable, never as a refused grant', async (_, status, body, type) => {
    answer = (response) => {
      response.writeHead(status, { 'content-type': type });
      response.end(body);
    };
    const error = await client.refresh(credential, 'rt', ['read']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamOAuthError);
    expect(error).toMatchObject({ refused: false, code: 'upstream_unavailable' });
  });

  it.each(['temporarily_unavailable', 'server_error'])('reads a 400 %s as the endpoint unavailable (RFC 6749 outage codes)', async (code) => {
    answer = json(400, `{"error":"${code}","error_description":"internal trace 9f"}`);
    const error = await client.refresh(credential, 'rt', ['read']).catch((e: unknown) => e);
    expect(error).toMatchObject({ refused: false, code: 'upstream_unavailable' });
    expect((error as Error).message).not.toContain('internal trace');
  });

  it.each([
    ['the refresh token', (rt: string) => `refresh token ${rt} is revoked`],
    ['the refresh token cut short', (rt: string) => `token ${rt.slice(4, 20)}... is revoked`],
    ['the refresh token URL-encoded', (rt: string) => `bad grant: refresh_token=${encodeURIComponent(rt)}`],
    ['the client secret', () => 'client writ with secret s3cr3t-client-secret-0a9f is not allowed'],
    ['the Basic credentials', () => `bad client: Basic ${Buffer.from('writ:s3cr3t-client-secret-0a9f').toString('base64')}`],
  ])("keeps the provider's error code but not a description that repeats %s", async (_, echo) => {
    const refreshToken = 'rt+/=_user_refresh_token_5c1e';
    answer = json(400, JSON.stringify({ error: 'invalid_grant', error_description: echo(refreshToken) }));
    const error = await client.refresh({ ...credential, client_secret: 's3cr3t-client-secret-0a9f' }, refreshToken, ['read']).catch((e: unknown) => e);
    expect(error).toMatchObject({ refused: true, code: 'invalid_grant' });
    expect((error as Error).message).toBe('the upstream answered invalid_grant: [description withheld: it repeated a secret of the request]');
  });

  it("keeps the provider's description when it repeats no secret, and refuses an error code that is one", async () => {
    answer = json(400, '{"error":"invalid_grant","error_description":"grant revoked by the user"}');
    expect(await client.refresh(credential, 'rt_user_refresh_token_5c1e', ['read']).catch((e: unknown) => e)).toMatchObject({
      code: 'invalid_grant',
      message: 'the upstream answered invalid_grant: grant revoked by the user',
    });
    answer = json(400, '{"error":"rt_user_refresh_token_5c1e"}');
    expect(await client.refresh(credential, 'rt_user_refresh_token_5c1e', ['read']).catch((e: unknown) => e)).toMatchObject({ code: 'invalid_response' });
  });

  it('still reads a 400 invalid_grant as a refused grant', async () => {
    answer = json(400, '{"error":"invalid_grant"}');
    const error = await client.refresh(credential, 'rt', ['read']).catch((e: unknown) => e);
    expect(error).toMatchObject({ refused: true, code: 'invalid_grant' });
  });

  it('keeps the scopes the user granted when a refresh answer has no scope (RFC 6749 section 5.1: unchanged)', async () => {
    // The connector asks for more than the user granted at the provider's consent; a policy reads the granted scopes.
    answer = json(200, '{"access_token":"at","token_type":"Bearer","refresh_token":"rt2","expires_in":3600}');
    const tokens = await client.refresh({ ...credential, scopes: ['read', 'write'] }, 'rt', ['read']);
    expect(tokens.scopes).toEqual(['read']);
  });

  it('refuses a gzip bomb from the token endpoint without inflating it into memory', async () => {
    // 64 MiB of JSON whitespace, compressed to a few dozen KiB; the answer's headers say gzip.
    const inflated = 64 * 1024 * 1024;
    const bomb = gzipSync(Buffer.concat([Buffer.from('{"access_token":"at","token_type":"Bearer","pad":"'), Buffer.alloc(inflated, 0x20), Buffer.from('"}')]));
    answer = (response) => {
      response.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(bomb.length) });
      response.end(bomb);
    };
    const error = await client.refresh(credential, 'rt', ['read']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UpstreamOAuthError);
    expect(error).toMatchObject({ code: 'invalid_response' });
    expect((error as Error).message).toMatch(/more than 65536 bytes/);
  });

  it('reads a huge 503 from the token endpoint as the endpoint unavailable, without reading it all', async () => {
    answer = (response) => {
      response.writeHead(503, { 'content-type': 'text/html' });
      response.end(Buffer.alloc(2 * 1024 * 1024, 0x61));
    };
    const error = await client.refresh(credential, 'rt', ['read']).catch((e: unknown) => e);
    expect(error).toMatchObject({ refused: false, code: 'upstream_unavailable' });
  });
});
