import { createServer } from 'node:http';
import { gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import type { Pool } from 'pg';
import { Agent, type Dispatcher } from 'undici';
import type { WritConfig } from '@writ/config';
import { createUpstreamDispatcher, type LookupFunction } from '@writ/connectors';
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

/**
 * A verifier of {@link ISSUER}'s tokens (the only registered issuer) whose JWKS endpoint answers
 * as `answer` says, counting the requests it gets.
 */
async function countingProvider(
  answer: (keySet: string) => 'keys' | 'down' | 'trickle' | { redirect: string } = () => 'keys',
  options: { host?: string; dispatcher?: Dispatcher; extraKeys?: number } = {},
) {
  const pair = await generateKeyPair('ES256');
  const extra = await Promise.all(
    Array.from({ length: options.extraKeys ?? 0 }, async (_, n) => ({
      ...(await exportJWK((await generateKeyPair('ES256')).publicKey)),
      kid: `extra-${n}`,
      alg: 'ES256',
      use: 'sig',
    })),
  );
  const keySet = JSON.stringify({ keys: [...extra, { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] });
  const counts = { fetches: 0, queries: 0 };
  const trickling = new Set<ReturnType<typeof setInterval>>();
  const server = createServer((_req, res) => {
    counts.fetches += 1;
    const how = answer(keySet);
    if (how === 'down') {
      res.writeHead(503).end('maintenance');
      return;
    }
    if (typeof how === 'object') {
      res.writeHead(302, { location: how.redirect }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    if (how === 'keys') {
      res.end(keySet);
      return;
    }
    // A JWK Set that never ends: a space every 50 ms, forever.
    res.write('{"keys":[');
    const timer = setInterval(() => res.write(' '), 50);
    trickling.add(timer);
    res.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const row = {
    issuer: ISSUER,
    jwks_uri: `http://${options.host ?? '127.0.0.1'}:${(server.address() as AddressInfo).port}/jwks`,
    audience: AUDIENCE,
    asserting_orchestrators: [] as string[],
    integrity_tag: '',
  };
  row.integrity_tag = integrity.tagIdentityProvider(identityProviderIntegrityFieldsOf(row));
  const pool = {
    query: (_sql: string, [issuer]: [string]) => {
      counts.queries += 1;
      return Promise.resolve({ rows: issuer === ISSUER ? [row] : [] });
    },
  } as unknown as Pool;
  const dispatcher = options.dispatcher ?? new Agent();
  return {
    key: pair.privateKey,
    counts,
    port: (server.address() as AddressInfo).port,
    verifier: new UserTokenVerifier(pool, dispatcher, integrity),
    close: async () => {
      for (const timer of trickling) clearInterval(timer);
      server.closeAllConnections();
      await dispatcher.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const userToken = (key: CryptoKey, claims: { sub?: string; kid?: string } = {}) =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid: claims.kid ?? 'k1' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(claims.sub ?? 'alice')
    .setExpirationTime('5m')
    .sign(key);

/** An unsigned token naming `issuer`: only its `iss` is read before the issuer is looked up. */
const unsignedFrom = (issuer: string) =>
  `${Buffer.from(JSON.stringify({ alg: 'none' })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: issuer, sub: 'x', aud: AUDIENCE, exp: 9_999_999_999 })).toString('base64url')}.`;

describe("UserTokenVerifier: the caller's unverified iss", () => {
  it("cannot evict a registered provider's key set by naming many unregistered issuers (no JWKS fetch forced)", async () => {
    const { key, counts, verifier, close } = await countingProvider();
    try {
      await expect(verifier.verify(await userToken(key))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
      expect(counts.fetches).toBe(1);
      for (let n = 0; n < 2_500; n += 1) {
        await expect(verifier.verify(unsignedFrom(`https://made-up-${n}.example`))).rejects.toMatchObject({ code: 'untrusted_issuer' });
      }
      await expect(verifier.verify(await userToken(key))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
      expect(counts.fetches).toBe(1);
    } finally {
      await close();
    }
  });

  it.each([
    ['a NUL', 'https://idp.example.test\u0000'],
    ['a control character', 'https://idp.example.test\n'],
    ['a lone surrogate', 'https://idp.example.test\ud800'],
    ['over 2048 characters', `https://idp.example.test/${'a'.repeat(2048)}`],
  ])('refuses an iss with %s as untrusted, without looking it up', async (_what, issuer) => {
    const { counts, verifier, close } = await countingProvider();
    try {
      await expect(verifier.verify(unsignedFrom(issuer))).rejects.toMatchObject({ name: 'UserTokenError', code: 'untrusted_issuer' });
      expect(counts.queries).toBe(0);
    } finally {
      await close();
    }
  });
});

describe("UserTokenVerifier: a provider's odd sub", () => {
  it.each([
    ['a lone surrogate', 'ali\ud800ce'],
    ['a NUL', 'ali\u0000ce'],
    ['a control character', 'alice\r\nbob'],
    ['over 255 characters', 'a'.repeat(256)],
  ])('refuses a signed token whose sub has %s (no_subject): it would be stored as another user', async (_what, sub) => {
    const { key, verifier, close } = await countingProvider();
    try {
      await expect(verifier.verify(await userToken(key, { sub }))).rejects.toMatchObject({ name: 'UserTokenError', code: 'no_subject' });
      await expect(verifier.verify(await userToken(key, { sub: 'ali\ud83d\ude00ce' }))).resolves.toEqual({ issuer: ISSUER, subject: 'ali\ud83d\ude00ce' });
    } finally {
      await close();
    }
  });
});

describe("UserTokenVerifier: how often a provider's JWKS is fetched", () => {
  it('fetches once for many tokens with unknown key ids (jose cooldown: at most every 30 s)', async () => {
    const { key, counts, verifier, close } = await countingProvider();
    try {
      await expect(verifier.verify(await userToken(key))).resolves.toBeDefined();
      for (let n = 0; n < 20; n += 1) await expect(verifier.verify(await userToken(key, { kid: `unknown-${n}` }))).rejects.toMatchObject({ code: 'signature' });
      expect(counts.fetches).toBe(1);
    } finally {
      await close();
    }
  });

  it('does not ask a provider that is down again for every token presented: one fetch per backoff, then it recovers', async () => {
    let state: 'down' | 'keys' = 'down';
    const { key, counts, verifier, close } = await countingProvider(() => state);
    try {
      for (let n = 0; n < 10; n += 1) {
        await expect(verifier.verify(await userToken(key))).rejects.toMatchObject({ name: 'IdentityProviderUnavailableError' });
      }
      expect(counts.fetches).toBe(1);
      state = 'keys';
      await new Promise((resolve) => setTimeout(resolve, 2_100));
      await expect(verifier.verify(await userToken(key))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
      expect(counts.fetches).toBe(2);
    } finally {
      await close();
    }
  });

  it('gives up on a JWK Set that never ends within the timeout (the provider is unavailable)', async () => {
    const { key, verifier, close } = await countingProvider(() => 'trickle');
    try {
      const started = Date.now();
      await expect(verifier.verify(await userToken(key))).rejects.toMatchObject({ name: 'IdentityProviderUnavailableError' });
      expect(Date.now() - started).toBeLessThan(8_000);
    } finally {
      await close();
    }
  }, 15_000);
});

describe('UserTokenVerifier: tokens presented at once to a cold instance', () => {
  it("fetches the provider's JWKS once, not once per token", async () => {
    const { key, counts, verifier, close } = await countingProvider();
    try {
      const tokens = await Promise.all(Array.from({ length: 20 }, () => userToken(key)));
      await expect(Promise.all(tokens.map((token) => verifier.verify(token)))).resolves.toHaveLength(20);
      expect(counts.fetches).toBe(1);
    } finally {
      await close();
    }
  });
});

/** The upstream dispatcher Writ builds, reaching only `allowed` besides public addresses, resolving every name to 127.0.0.1. */
const guardedDispatcher = (allowed: string[]) => {
  const toLoopback: LookupFunction = (_hostname, options, callback) =>
    options.all ? callback(null, [{ address: '127.0.0.1', family: 4 }]) : callback(null, '127.0.0.1', 4);
  return createUpstreamDispatcher(
    { upstreamAllowedNetworks: allowed, upstreamConnectTimeoutMs: 2_000, upstreamTimeoutMs: 5_000 } as unknown as WritConfig,
    toLoopback,
  );
};

describe("UserTokenVerifier: where a provider's JWKS is fetched from", () => {
  it('refuses a JWKS host name that resolves to a loopback address outside the allowed networks (nothing sent)', async () => {
    const { key, counts, verifier, close } = await countingProvider(undefined, { host: 'keys.idp.example.test', dispatcher: guardedDispatcher([]) });
    try {
      await expect(verifier.verify(await userToken(key))).rejects.toMatchObject({ name: 'IdentityProviderUnavailableError' });
      expect(counts.fetches).toBe(0);
    } finally {
      await close();
    }
  });

  it('control: the same, with loopback allowed, verifies', async () => {
    const { key, verifier, close } = await countingProvider(undefined, { host: 'keys.idp.example.test', dispatcher: guardedDispatcher(['127.0.0.0/8']) });
    try {
      await expect(verifier.verify(await userToken(key))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
    } finally {
      await close();
    }
  });

  it('does not follow a redirect from the JWKS endpoint (the provider is unavailable; the target gets nothing)', async () => {
    const target = await countingProvider();
    const { key, counts, verifier, close } = await countingProvider(() => ({ redirect: `http://127.0.0.1:${target.port}/jwks` }));
    try {
      await expect(verifier.verify(await userToken(key))).rejects.toMatchObject({ name: 'IdentityProviderUnavailableError' });
      expect(counts.fetches).toBe(1);
      expect(target.counts.fetches).toBe(0);
    } finally {
      await close();
      await target.close();
    }
  });

  it('verifies against a set of hundreds of keys by kid, and refuses a token without kid that several keys could verify (no key tried in turn)', async () => {
    const { key, verifier, close } = await countingProvider(undefined, { extraKeys: 300 });
    try {
      await expect(verifier.verify(await userToken(key))).resolves.toEqual({ issuer: ISSUER, subject: 'alice' });
      const noKid = await new SignJWT({})
        .setProtectedHeader({ alg: 'ES256' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setSubject('alice')
        .setExpirationTime('5m')
        .sign(key);
      await expect(verifier.verify(noKid)).rejects.toMatchObject({ name: 'UserTokenError', code: 'signature' });
    } finally {
      await close();
    }
  });
});
