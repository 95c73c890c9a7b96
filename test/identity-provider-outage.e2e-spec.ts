import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type CryptoKey, type JWK, SignJWT } from 'jose';
import type { Pool } from 'pg';
import { PAYOUT_ALLOWED, seedWorld, tasksToken, type World } from './support/grant-flow';
import { http, sendJson, type TestResponse } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';
import { insertIdentityProviderRow, rowIntegrityOf } from '@writ/testing';

/**
 * An identity provider whose keys cannot be fetched (JWKS endpoint refusing connections,
 * answering 503, hanging past the timeout, or answering something that is not a JWK Set) is the
 * provider's outage: 503 with Retry-After, the caller's `user_token` not blamed, and not counted
 * toward the per-address failure throttle. A token that does not verify with keys that were
 * fetched stays the caller's fault (400 naming `user_token`, 401 on /v1/me/connections).
 */
describe('identity provider outage', () => {
  let services: TestServices;
  let pool: Pool;
  let world: World;
  let jwksServer: Server;
  let jwksBase: string;
  let refusedBase: string;
  let publicJwk: JWK;
  let privateKey: CryptoKey;
  let otherKey: CryptoKey;
  /** What the `/flaky` JWKS answers: `down` is 503, `up` the real key set. */
  let flaky: 'down' | 'up' = 'down';
  const hanging: Array<() => void> = [];

  const SOURCE_FAILURES = 3;

  beforeAll(async () => {
    services = await startTestServices({
      env: { WRIT_THROTTLE_WINDOW_SECONDS: '3600', WRIT_THROTTLE_SOURCE_FAILURES: String(SOURCE_FAILURES), WRIT_THROTTLE_AUDIT_EVENTS: '5' },
    });
    pool = services.runtime.pool;
    world = await seedWorld(pool);
    const keys = await generateKeyPair('ES256', { extractable: true });
    privateKey = keys.privateKey;
    otherKey = (await generateKeyPair('ES256')).privateKey;
    publicJwk = { ...(await exportJWK(keys.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    const keySet = JSON.stringify({ keys: [publicJwk] });
    jwksServer = createServer((req, res) => {
      const json = (body: string) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(body);
      };
      if (req.url === '/good' || (req.url === '/flaky' && flaky === 'up')) return json(keySet);
      if (req.url === '/null') return json('null');
      if (req.url === '/hang') {
        hanging.push(() => res.destroy());
        return;
      }
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('maintenance');
    });
    jwksServer.listen(0, '127.0.0.1');
    await once(jwksServer, 'listening');
    jwksBase = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}`;
    // A port nothing listens on: connections are refused.
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    refusedBase = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise((resolve) => closed.close(resolve));
    const providers: Array<[string, string]> = [
      ['https://idp-refused.example', `${refusedBase}/jwks`],
      ['https://idp-503.example', `${jwksBase}/down`],
      ['https://idp-hang.example', `${jwksBase}/hang`],
      ['https://idp-null.example', `${jwksBase}/null`],
      ['https://idp-flaky.example', `${jwksBase}/flaky`],
      ['https://idp-good.example', `${jwksBase}/good`],
    ];
    for (const [issuer, jwksUri] of providers) {
      await insertIdentityProviderRow(pool, rowIntegrityOf(pool), { issuer, jwksUri });
    }
  });
  afterAll(async () => {
    for (const release of hanging) release();
    jwksServer?.closeAllConnections();
    jwksServer?.close();
    await services?.close();
  });

  const userToken = (issuer: string, subject = 'alice', key: CryptoKey = privateKey, kid = 'k1') =>
    new SignJWT({ sub: subject }).setProtectedHeader({ alg: 'ES256', kid }).setIssuer(issuer).setAudience('writ').setExpirationTime('5m').sign(key);

  const createTask = async (token: string) =>
    sendJson(
      'POST',
      `${services.issuer}/v1/tasks`,
      { agent_id: 'agent-1', purpose: 'pay invoice INV-42', allowed: PAYOUT_ALLOWED, ttl_seconds: 900, user_token: token },
      await tasksToken(services, world.orchestrator),
    );

  const myConnections = (token: string) => http(`${services.issuer}/v1/me/connections`, { headers: { authorization: `Bearer ${token}` } });

  const expectUnavailable = (response: TestResponse) => {
    expect(response.status).toBe(503);
    expect(response.body.error).toBe('temporarily_unavailable');
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(response.body.fields).toBeUndefined();
    expect(response.text).not.toMatch(/signature|user_token/);
  };

  it.each([
    ['refuses connections', 'https://idp-refused.example'],
    ['answers 503', 'https://idp-503.example'],
    ['hangs past the timeout', 'https://idp-hang.example'],
    ['answers JSON null', 'https://idp-null.example'],
  ])('task creation while the JWKS endpoint %s: 503 with Retry-After, user_token not blamed', async (_, issuer) => {
    expectUnavailable(await createTask(await userToken(issuer)));
  });

  it('connect links while the JWKS endpoint answers 503: 503 with Retry-After, user_token not blamed', async () => {
    const response = await sendJson(
      'POST',
      `${services.issuer}/v1/connections/links`,
      { connector_id: 'payments', user_token: await userToken('https://idp-503.example') },
      await tasksToken(services, world.orchestrator),
    );
    expectUnavailable(response);
  });

  it('still blames a token that does not verify with keys that were fetched (400 naming user_token)', async () => {
    const forged = await createTask(await userToken('https://idp-good.example', 'alice', otherKey));
    expect(forged.status).toBe(400);
    expect(forged.body.fields).toEqual([expect.objectContaining({ field: 'user_token', message: expect.stringContaining('(signature)') })]);
    const unknownKid = await createTask(await userToken('https://idp-good.example', 'alice', privateKey, 'no-such-key'));
    expect(unknownKid.status).toBe(400);
    expect(unknownKid.body.fields).toEqual([expect.objectContaining({ field: 'user_token' })]);
    expect((await createTask(await userToken('https://idp-good.example'))).status).toBe(201);
  });

  it('/v1/me/connections: an outage is 503 and never counts toward the failure throttle; bad tokens still do', async () => {
    const token = await userToken('https://idp-flaky.example');
    for (let attempt = 0; attempt < SOURCE_FAILURES * 2; attempt++) expectUnavailable(await myConnections(token));
    expectUnavailable(await myConnections(await userToken('https://idp-refused.example')));
    flaky = 'up';
    // Back up, but not asked again for 2 s after its last failure: still the outage's 503, then served.
    expectUnavailable(await myConnections(token));
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    const listed = await myConnections(token);
    expect(listed.status).toBe(200);
    expect(listed.body.items).toEqual([]);
    // Control: a forged token is the caller's failure (401), counted until the address is throttled.
    const forged = await userToken('https://idp-good.example', 'alice', otherKey);
    const statuses: number[] = [];
    for (let attempt = 0; attempt < SOURCE_FAILURES + 1; attempt++) statuses.push((await myConnections(forged)).status);
    expect(statuses[0]).toBe(401);
    expect(statuses).toContain(429);
  });
});
