import { randomUUID } from 'node:crypto';
import { createRemoteJWKSet, exportJWK, jwtVerify, SignJWT } from 'jose';
import { clientAssertion, clientAuthFields, createClientKey, retagRow } from '@writ/testing';
import { seedWorld, World } from './support/grant-flow';
import { postForm } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

describe('private_key_jwt client authentication (RFC 7523, rfc7523bis) under attack', () => {
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    services = await startTestServices();
    world = await seedWorld(services.runtime.pool);
  });
  afterAll(() => services.close());

  const token = (assertion: string, extra: Record<string, string> = {}) =>
    postForm(`${services.issuer}/oauth2/token`, {
      grant_type: 'client_credentials',
      scope: 'tasks',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: assertion,
      ...extra,
    });

  const expectInvalidClient = async (assertion: string, extra?: Record<string, string>) => {
    const response = await token(assertion, extra);
    expect(response.status).toBe(401);
    expect(response.body.error).toBe('invalid_client');
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.text).not.toContain(assertion);
    return response;
  };

  const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const now = () => Math.floor(Date.now() / 1000);
  const claims = (overrides: Record<string, unknown> = {}) => ({
    iss: 'orch-1',
    sub: 'orch-1',
    aud: services.issuer,
    iat: now(),
    exp: now() + 60,
    jti: randomUUID(),
    ...overrides,
  });

  it('accepts a well-formed assertion once', async () => {
    const assertion = await clientAssertion('orch-1', world.orchestrator.key, services.issuer);
    expect((await token(assertion)).status).toBe(200);
    await expectInvalidClient(assertion);
  });

  it('refuses alg none', async () => {
    await expectInvalidClient(`${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims())}.`);
  });

  it('refuses HS256 keyed with the public key', async () => {
    const secret = new TextEncoder().encode(JSON.stringify(world.orchestrator.key.publicJwk));
    const hs = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: world.orchestrator.key.publicJwk.kid }).sign(secret);
    await expectInvalidClient(hs);
  });

  it('refuses a key that is not registered, even with an embedded jwk header', async () => {
    const stranger = await createClientKey();
    await expectInvalidClient(await clientAssertion('orch-1', stranger, services.issuer));
    const jwk = await exportJWK(stranger.privateKey).then(({ d: _d, ...pub }) => pub);
    await expectInvalidClient(await clientAssertion('orch-1', stranger, services.issuer, { header: { jwk } }));
    await expectInvalidClient(await clientAssertion('orch-1', world.orchestrator.key, services.issuer, { header: { jku: 'http://127.0.0.1:9/jwks' } }));
  });

  it.each([
    ['an array audience', { aud: ['ISSUER'] }],
    ['the token endpoint as audience', { aud: 'ISSUER/oauth2/token' }],
    ['another audience', { aud: 'https://elsewhere.example' }],
    ['an expired assertion', { exp: -120, iat: -180 }],
    ['a lifetime over 5 minutes', { exp: 900 }],
    ['iss different from sub', { sub: 'agent-1' }],
  ])('refuses %s', async (_name, overrides) => {
    const resolved: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(overrides)) {
      if (key === 'exp' || key === 'iat') resolved[key] = now() + (value as number);
      else if (Array.isArray(value)) resolved[key] = value.map((item) => String(item).replace('ISSUER', services.issuer));
      else resolved[key] = String(value).replace('ISSUER', services.issuer);
    }
    await expectInvalidClient(await clientAssertion('orch-1', world.orchestrator.key, services.issuer, { claims: resolved }));
  });

  it('refuses an assertion without jti or exp', async () => {
    await expectInvalidClient(await clientAssertion('orch-1', world.orchestrator.key, services.issuer, { omit: ['jti'] }));
    await expectInvalidClient(await clientAssertion('orch-1', world.orchestrator.key, services.issuer, { omit: ['exp'] }));
  });

  it('refuses a tampered payload and a client_id that disagrees', async () => {
    const assertion = await clientAssertion('orch-1', world.orchestrator.key, services.issuer);
    const [header, , signature] = assertion.split('.');
    await expectInvalidClient(`${header}.${b64(claims({ exp: now() + 90 }))}.${signature}`);
    await expectInvalidClient(await clientAssertion('orch-1', world.orchestrator.key, services.issuer), { client_id: 'agent-1' });
  });

  it('refuses client secrets, HTTP Basic and unknown or suspended clients', async () => {
    const response = await postForm(`${services.issuer}/oauth2/token`, { grant_type: 'client_credentials', client_id: 'orch-1', client_secret: 'x' });
    expect(response.status).toBe(401);
    const basic = await postForm(
      `${services.issuer}/oauth2/token`,
      { grant_type: 'client_credentials', ...(await clientAuthFields('orch-1', world.orchestrator.key, services.issuer)) },
      { authorization: `Basic ${Buffer.from('orch-1:x').toString('base64')}` },
    );
    expect(basic.status).toBe(401);
    await expectInvalidClient(await clientAssertion('nobody', world.orchestrator.key, services.issuer));
    await services.runtime.pool.query(`UPDATE agents SET status = 'suspended' WHERE id = 'agent-2'`);
    await retagRow(services.runtime.pool, services.runtime.rowIntegrity, 'agents', 'agent-2');
    const suspended = await postForm(`${services.issuer}/oauth2/token`, {
      grant_type: 'client_credentials',
      ...(await clientAuthFields('agent-2', world.otherAgent.key, services.issuer)),
    });
    expect(suspended.body.error).toBe('invalid_client');
  });

  it('answers client authentication by an Authorization header with 401 and a challenge of its scheme (RFC 6749 section 5.2)', async () => {
    const cases: Array<[string, string]> = [
      [`Basic ${Buffer.from('orch-1:x').toString('base64')}`, 'Basic realm="writ"'],
      ['basic b3JjaC0xOng=', 'Basic realm="writ"'],
      ['Bearer abc', 'Bearer realm="writ"'],
      ['Digest username="orch-1"', 'Basic realm="writ"'],
    ];
    for (const endpoint of ['token', 'introspect', 'revoke']) {
      for (const [authorization, challenge] of cases) {
        const response = await postForm(
          `${services.issuer}/oauth2/${endpoint}`,
          { grant_type: 'client_credentials', token: 'x', ...(await clientAuthFields('orch-1', world.orchestrator.key, services.issuer)) },
          { authorization },
        );
        expect(response.status).toBe(401);
        expect(response.body).toEqual({ error: 'invalid_client', error_description: 'only private_key_jwt client authentication is supported' });
        expect(response.headers.get('cache-control')).toBe('no-store');
        expect(response.headers.get('www-authenticate')?.startsWith(challenge)).toBe(true);
      }
    }
    // Without an Authorization header, an invalid_client carries no challenge (the client used none).
    const unauthenticated = await postForm(`${services.issuer}/oauth2/token`, { grant_type: 'client_credentials' });
    expect(unauthenticated.status).toBe(401);
    expect(unauthenticated.headers.get('www-authenticate')).toBeNull();
  });

  it('refuses a replay on another instance and after a restart (jti kept in PostgreSQL)', async () => {
    const assertion = await clientAssertion('orch-1', world.orchestrator.key, services.issuer);
    expect((await token(assertion)).status).toBe(200);
    const second = await startTestServices({ db: services.db, env: { WRIT_ISSUER: services.issuer } });
    try {
      const replay = await postForm(`${second.authUrl}/oauth2/token`, {
        grant_type: 'client_credentials',
        client_assertion_type: ASSERTION_TYPE,
        client_assertion: assertion,
      });
      expect(replay.body.error).toBe('invalid_client');
    } finally {
      await second.close();
    }
  });

  it('verifies assertions and signs tokens alike with ECDSA on the thread pool and on the main thread (WRIT_ECDSA)', async () => {
    const other = services.runtime.config.operations.ecdsa === 'thread-pool' ? 'main-thread' : 'thread-pool';
    const second = await startTestServices({ db: services.db, env: { WRIT_ISSUER: services.issuer, WRIT_ECDSA: other } });
    try {
      expect(second.runtime.config.operations.ecdsa).toBe(other);
      const jwks = createRemoteJWKSet(new URL(`${services.issuer}/oauth2/jwks`));
      for (const authUrl of [services.authUrl, second.authUrl]) {
        const fields = { grant_type: 'client_credentials', scope: 'tasks', client_assertion_type: ASSERTION_TYPE };
        // Two at once, each with its own assertion, and a third whose signature is another's.
        const [first, next] = await Promise.all([0, 1].map(() => clientAssertion('orch-1', world.orchestrator.key, services.issuer)));
        const forged = `${first.split('.').slice(0, 2).join('.')}.${next.split('.')[2]}`;
        const [a, b, refused] = await Promise.all(
          [first, next, forged].map((assertion) => postForm(`${authUrl}/oauth2/token`, { ...fields, client_assertion: assertion })),
        );
        expect([a.status, b.status, refused.status, refused.body.error]).toEqual([200, 200, 401, 'invalid_client']);
        for (const issued of [a, b]) {
          const { payload, protectedHeader } = await jwtVerify(issued.body.access_token, jwks, { issuer: services.issuer });
          expect(protectedHeader.alg).toBe('ES256');
          expect(payload.client_id ?? payload.sub).toBe('orch-1');
        }
      }
    } finally {
      await second.close();
    }
  });

  it('answers POST /oauth2/token as Express matches it (no case, a trailing slash), and leaves other methods to Nest', async () => {
    const fields = { grant_type: 'client_credentials', scope: 'tasks', client_assertion_type: ASSERTION_TYPE };
    for (const path of ['/oauth2/token', '/oauth2/token/', '/OAuth2/Token']) {
      const response = await postForm(`${services.issuer}${path}`, {
        ...fields,
        client_assertion: await clientAssertion('orch-1', world.orchestrator.key, services.issuer),
      });
      expect([path, response.status, response.body.token_type]).toEqual([path, 200, 'Bearer']);
      expect([response.headers.get('cache-control'), response.headers.get('pragma')]).toEqual(['no-store', 'no-cache']);
      expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    }
    const query = await postForm(`${services.issuer}/oauth2/token?scope=tasks`, {
      ...fields,
      client_assertion: await clientAssertion('orch-1', world.orchestrator.key, services.issuer),
    });
    expect([query.status, query.body.error]).toEqual([400, 'invalid_request']);
    expect(query.headers.get('cache-control')).toBe('no-store');
    expect((await fetch(`${services.issuer}/oauth2/token`)).status).toBe(404);
    expect((await postForm(`${services.issuer}/oauth2/tokens`, fields)).status).toBe(404);
  });

  it('audits failed authentications without the assertion', async () => {
    const assertion = await clientAssertion('orch-1', world.orchestrator.key, services.issuer, { claims: { aud: [services.issuer] } });
    await token(assertion);
    const { rows } = await services.runtime.pool.query(`SELECT data FROM audit_events WHERE type = 'token.refused' ORDER BY seq DESC LIMIT 1`);
    expect(rows[0].data).toMatchObject({ error: 'invalid_client', reason: 'assertion_audience' });
    const all = await services.runtime.pool.query('SELECT data::text AS data FROM audit_events');
    expect(all.rows.map((row) => row.data).join()).not.toContain(assertion.split('.')[2]);
  });
});
