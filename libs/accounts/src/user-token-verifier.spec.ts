import { createServer } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import type { Pool } from 'pg';
import { Agent } from 'undici';
import { UserTokenVerifier } from './user-token-verifier';

const ISSUER = 'https://idp.example.test';
const AUDIENCE = 'writ-test';

/** A verifier of {@link ISSUER}'s tokens whose key set is served by `serve`, given the key set's JSON text. */
async function verifierServing(serve: (keySet: string) => { headers: Record<string, string>; body: Buffer | string }) {
  const pair = await generateKeyPair('ES256');
  const { headers, body } = serve(JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] }));
  const server = createServer((_req, res) => res.writeHead(200, headers).end(body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const row = {
    issuer: ISSUER,
    jwks_uri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
    audience: AUDIENCE,
    asserting_orchestrators: [],
  };
  const pool = { query: () => Promise.resolve({ rows: [row] }) } as unknown as Pool;
  const dispatcher = new Agent();
  return {
    key: pair.privateKey,
    verifier: new UserTokenVerifier(pool, dispatcher),
    close: async () => {
      await dispatcher.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('UserTokenVerifier: the clock claims', () => {
  let key: CryptoKey;
  let verifier: UserTokenVerifier;
  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ key, verifier, close } = await verifierServing((keySet) => ({ headers: { 'content-type': 'application/json' }, body: keySet })));
  });

  afterAll(() => close());

  const now = () => Math.floor(Date.now() / 1000);
  const token = (iat: number | undefined) => {
    const jwt = new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('alice')
      .setExpirationTime(now() + 600);
    if (iat !== undefined) jwt.setIssuedAt(iat);
    return jwt.sign(key);
  };

  it('accepts a token issued now, within the clock tolerance ahead, or without iat', async () => {
    await expect(verifier.verify(await token(now()))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
    await expect(verifier.verify(await token(now() + 3))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
    await expect(verifier.verify(await token(undefined))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
  });

  it('refuses a token issued in the future (beyond the clock tolerance) as claim_iat', async () => {
    await expect(verifier.verify(await token(now() + 300))).rejects.toMatchObject({ name: 'UserTokenError', code: 'claim_iat' });
    await expect(verifier.verify(await token(now() + 60 * 60 * 24 * 365))).rejects.toMatchObject({ name: 'UserTokenError', code: 'claim_iat' });
  });

  it('still refuses an expired token', async () => {
    const expired = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('alice')
      .setIssuedAt(now() - 600)
      .setExpirationTime(now() - 60)
      .sign(key);
    await expect(verifier.verify(expired)).rejects.toMatchObject({ code: 'expired' });
  });
});

describe('UserTokenVerifier: the JWKS answer', () => {
  let key: CryptoKey;
  let verifier: UserTokenVerifier;
  let close: () => Promise<void>;

  beforeAll(async () => {
    ({ key, verifier, close } = await verifierServing((keySet) => {
      // A genuine key set padded with 64 MiB of JSON whitespace, gzipped to a few dozen KiB.
      const bomb = gzipSync(Buffer.concat([Buffer.from(keySet.slice(0, -1)), Buffer.alloc(64 * 1024 * 1024, 0x20), Buffer.from('}')]));
      return { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(bomb.length) }, body: bomb };
    }));
  });

  afterAll(() => close());

  it('does not inflate a gzip bomb from the JWKS endpoint: the keys could not be had (the provider is unavailable)', async () => {
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('alice')
      .setExpirationTime(Math.floor(Date.now() / 1000) + 600)
      .sign(key);
    await expect(verifier.verify(token)).rejects.toMatchObject({
      name: 'IdentityProviderUnavailableError',
      message: expect.stringMatching(/more than 1048576 bytes/),
    });
  });
});
