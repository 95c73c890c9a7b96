import { createServer } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import type { Pool } from 'pg';
import { Agent } from 'undici';
import { identityProviderIntegrityFieldsOf, RowIntegrity } from '@writ/grants';
import { MasterKey } from '@writ/keys';
import { UserTokenVerifier } from './user-token-verifier';

const integrity = new RowIntegrity(new MasterKey(Buffer.alloc(32, 7)));

const ISSUER = 'https://idp.example.test';
const AUDIENCE = 'writ-test';

/** A verifier of {@link ISSUER}'s tokens whose key set is served by `serve`, given the key set's JSON text. */
async function verifierServing(
  serve: (keySet: string) => { headers: Record<string, string>; body: Buffer | string },
  forge?: (row: { issuer: string; jwks_uri: string; audience: string; asserting_orchestrators: string[]; integrity_tag: string }) => void,
) {
  const pair = await generateKeyPair('ES256');
  const { headers, body } = serve(JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] }));
  const server = createServer((_req, res) => res.writeHead(200, headers).end(body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const row = {
    issuer: ISSUER,
    jwks_uri: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
    audience: AUDIENCE,
    asserting_orchestrators: [] as string[],
    integrity_tag: '',
  };
  row.integrity_tag = integrity.tagIdentityProvider(identityProviderIntegrityFieldsOf(row));
  forge?.(row);
  const pool = { query: () => Promise.resolve({ rows: [row] }) } as unknown as Pool;
  const dispatcher = new Agent();
  return {
    key: pair.privateKey,
    verifier: new UserTokenVerifier(pool, dispatcher, integrity),
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

describe('UserTokenVerifier: a provider row changed without the master key', () => {
  const sign = (key: CryptoKey) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject('alice')
      .setExpirationTime('5m')
      .sign(key);
  const served = (keySet: string) => ({ headers: { 'content-type': 'application/json' }, body: keySet });

  it.each([
    ['untagged', (row: { integrity_tag: string }) => (row.integrity_tag = null as unknown as string)],
    ['its audience edited', (row: { audience: string }) => (row.audience = `${AUDIENCE}-x`)],
    ['its asserting orchestrators edited', (row: { asserting_orchestrators: string[] }) => row.asserting_orchestrators.push('orch-dba')],
    [
      'its tag copied from another provider',
      (row: { integrity_tag: string }) => {
        row.integrity_tag = integrity.tagIdentityProvider({
          issuer: 'https://other.example',
          jwksUri: 'https://other.example/jwks',
          audience: AUDIENCE,
          assertingOrchestrators: [],
        });
      },
    ],
    [
      'its tag copied from another table',
      (row: { integrity_tag: string; issuer: string }) => {
        row.integrity_tag = integrity.tagClient('agents', { id: row.issuer, status: 'active', jwks: { keys: [] } });
      },
    ],
  ])('refuses its users when %s (an untrusted issuer)', async (_what, forge) => {
    const { key, verifier, close } = await verifierServing(served, forge);
    try {
      await expect(verifier.verify(await sign(key))).rejects.toMatchObject({ code: 'untrusted_issuer' });
      await expect(verifier.mayAssert('orch-dba', ISSUER)).resolves.toBe(false);
    } finally {
      await close();
    }
  });

  it('accepts its users when the row is as Writ wrote it', async () => {
    const { key, verifier, close } = await verifierServing(served);
    try {
      await expect(verifier.verify(await sign(key))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
    } finally {
      await close();
    }
  });
});
