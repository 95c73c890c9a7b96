import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type CryptoKey, SignJWT } from 'jose';
import type { Pool } from 'pg';
import { insertIdentityProviderRow, rowIntegrityOf } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { PAYOUT_ALLOWED, seedWorld, tasksToken, type World } from './support/grant-flow';
import { sendJson } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

const ISSUER = 'https://idp-hostile.example';

/**
 * A hijacked orchestrator presenting odd user tokens, a hostile identity provider signing odd
 * claims, and an admin registering look-alike issuers: each case attacks a claim of
 * docs/connected-accounts.md or docs/admin-api.md.
 */
describe('identity providers and user tokens against a hostile orchestrator, provider or admin', () => {
  let services: TestServices;
  let pool: Pool;
  let world: World;
  let jwksServer: Server;
  let privateKey: CryptoKey;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    pool = services.runtime.pool;
    world = await seedWorld(pool);
    const keys = await generateKeyPair('ES256', { extractable: true });
    privateKey = keys.privateKey;
    const keySet = JSON.stringify({ keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] });
    jwksServer = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(keySet);
    });
    jwksServer.listen(0, '127.0.0.1');
    await once(jwksServer, 'listening');
    const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
    await insertIdentityProviderRow(pool, rowIntegrityOf(pool), { issuer: ISSUER, jwksUri });
  });
  afterAll(async () => {
    jwksServer?.closeAllConnections();
    jwksServer?.close();
    await services?.close();
  });

  const segment = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const sign = (payload: Record<string, unknown>) =>
    new SignJWT({ iss: ISSUER, aud: 'writ', sub: 'alice', exp: Math.floor(Date.now() / 1000) + 300, ...payload })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .sign(privateKey);
  const declare = async (proof: Record<string, unknown>) =>
    sendJson(
      'POST',
      `${services.issuer}/v1/tasks`,
      { agent_id: 'agent-1', purpose: 'probe', allowed: PAYOUT_ALLOWED, ttl_seconds: 600, ...proof },
      await tasksToken(services, world.orchestrator),
    );
  const fieldsOf = (body: { fields?: Array<{ field: string }> }) => (body.fields ?? []).map((entry) => entry.field);
  const taskCount = async () => Number((await pool.query('SELECT count(*) FROM tasks')).rows[0].count);
  const register = (issuer: string) =>
    sendJson(
      'POST',
      `${services.adminUrl}/v1/identity-providers`,
      { issuer, jwks_uri: 'https://keys.idp-variants.example/jwks', audience: 'writ' },
      services.adminToken,
    );

  it('names user_token for an iss with a NUL (read before any signature check) and for a signed sub that is not valid text', async () => {
    const before = await taskCount();
    const nulIssuer = `${segment({ alg: 'ES256', kid: 'k1' })}.${segment({ iss: `${ISSUER}\u0000`, aud: 'writ', sub: 'alice', exp: 9_999_999_999 })}.AAAA`;
    for (const userToken of [nulIssuer, await sign({ sub: 'ali\ud800ce' }), await sign({ sub: 'ali\u0000ce' })]) {
      const refused = await declare({ user_token: userToken });
      expect(refused.status).toBe(400);
      expect(fieldsOf(refused.body)).toEqual(['user_token']);
    }
    expect(await taskCount()).toBe(before);
  });

  it('reads only iss and sub of the claims: a __proto__ member changes nothing; aud may list other audiences', async () => {
    const proto = await sign(JSON.parse('{"sub":"bob","__proto__":{"sub":"admin","iss":"https://elsewhere.example"}}'));
    const created = await declare({ user_token: proto });
    expect(created.status).toBe(201);
    const shown = await sendJson('GET', `${services.issuer}/v1/tasks/${created.body.task_id}`, undefined, await tasksToken(services, world.orchestrator));
    expect(shown.body.user).toEqual({ iss: ISSUER, sub: 'bob' });
    // As documented: aud must contain the registered audience; azp is not read.
    expect((await declare({ user_token: await sign({ aud: ['another-app', 'writ'], azp: 'another-app' }) })).status).toBe(201);
    for (const odd of [{ aud: undefined }, { aud: ['another-app'] }, { exp: '9999999999' }, { nbf: 'soon' }, { iat: '0' }, { sub: 42 }]) {
      const refused = await declare({ user_token: await sign(odd) });
      expect(refused.status).toBe(400);
      expect(fieldsOf(refused.body)).toEqual(['user_token']);
    }
  });

  it('refuses another spelling of a registered issuer (trailing slash, host case, default port) as a 409; another path is another issuer', async () => {
    expect((await register('https://idp-variants.example/tenant')).status).toBe(201);
    for (const variant of [
      'https://idp-variants.example/tenant',
      'https://idp-variants.example/tenant/',
      'https://idp-variants.example/tenant//',
      'https://IDP-Variants.example/tenant',
      'HTTPS://idp-variants.example:443/tenant',
      'https://idp-variants.example/./tenant',
    ]) {
      const refused = await register(variant);
      expect(refused.status).toBe(409);
    }
    expect((await register('https://idp-variants.example/Tenant')).status).toBe(201);
    const listed = await sendJson('GET', `${services.adminUrl}/v1/identity-providers?limit=100`, undefined, services.adminToken);
    expect(listed.body.items.map((item: { issuer: string }) => item.issuer).filter((issuer: string) => /idp-variants/i.test(issuer))).toEqual([
      'https://idp-variants.example/Tenant',
      'https://idp-variants.example/tenant',
    ]);
  });

  it('registers one of several spellings of an issuer fired at once', async () => {
    const spellings = ['https://idp-race.example', 'https://idp-race.example/', 'https://IDP-RACE.example', 'https://idp-race.example:443'];
    const answers = await Promise.all([...spellings, ...spellings].map((issuer) => register(issuer)));
    expect(answers.map((answer) => answer.status).sort()).toEqual([201, 409, 409, 409, 409, 409, 409, 409]);
    const { rows } = await pool.query("SELECT issuer FROM identity_providers WHERE issuer ILIKE 'https://idp-race.example%'");
    expect(rows).toHaveLength(1);
  });
});
