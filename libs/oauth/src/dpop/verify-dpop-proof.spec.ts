import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { InvalidDpopProofError } from '../errors/oauth-errors';
import { verifyDpopProof } from './verify-dpop-proof';

const NOW = 1_800_000_000;
const URL = 'https://gateway.example/connectors/payments/v1/payouts';

describe('verifyDpopProof', () => {
  let privateKey: CryptoKey;
  let publicJwk: JWK;
  let otherKey: CryptoKey;
  let p384Jwk: JWK;

  beforeAll(async () => {
    const pair = await generateKeyPair('ES256', { extractable: true });
    privateKey = pair.privateKey;
    publicJwk = await exportJWK(pair.publicKey);
    otherKey = (await generateKeyPair('ES256')).privateKey;
    p384Jwk = await exportJWK((await generateKeyPair('ES384', { extractable: true })).publicKey);
  });

  const proof = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, key?: CryptoKey) =>
    new SignJWT({ jti: 'proof-1', htm: 'POST', htu: URL, iat: NOW, ...claims })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk, ...header })
      .sign(key ?? privateKey);
  /** A proof with `extra` header members that jose would not sign: signed here with WebCrypto. */
  const signedAsIs = async (extra: Record<string, unknown>) => {
    const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const input = `${encode({ alg: 'ES256', typ: 'dpop+jwt', jwk: publicJwk, ...extra })}.${encode({ jti: 'raw', htm: 'POST', htu: URL, iat: NOW })}`;
    const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, Buffer.from(input));
    return `${input}.${Buffer.from(signature).toString('base64url')}`;
  };
  const reason = async (value: string | string[] | undefined, extra: Partial<Parameters<typeof verifyDpopProof>[1]> = {}) => {
    try {
      await verifyDpopProof(value, { method: 'POST', url: URL, now: NOW, ...extra });
      return 'accepted';
    } catch (error) {
      expect(error).toBeInstanceOf(InvalidDpopProofError);
      return (error as InvalidDpopProofError).reason;
    }
  };

  it('accepts a proof for this request and gives its key thumbprint', async () => {
    const verified = await verifyDpopProof(await proof(), { method: 'POST', url: `${URL}?x=1`, now: NOW });
    expect(verified.jkt).toBe(await calculateJwkThumbprint(publicJwk));
    expect(verified.jti).toBe('proof-1');
  });

  it('binds a proof to an access token with ath at a resource server (401 with a DPoP challenge otherwise)', async () => {
    const ath = createHash('sha256').update('the-token').digest('base64url');
    await expect(
      verifyDpopProof(await proof({ ath }), { method: 'POST', url: URL, now: NOW, accessToken: 'the-token', resourceServer: true }),
    ).resolves.toBeDefined();
    const error = await verifyDpopProof(await proof({ ath }), { method: 'POST', url: URL, now: NOW, accessToken: 'another-token', resourceServer: true }).catch(
      (e) => e,
    );
    expect(error).toBeInstanceOf(InvalidDpopProofError);
    expect(error.status).toBe(401);
    expect(error.wwwAuthenticate.scheme).toBe('DPoP');
  });

  it.each([
    ['no proof', async () => undefined, 'dpop_missing'],
    ['two proofs', async () => [await proof(), await proof()], 'dpop_multiple'],
    ['two proofs in one header', async () => `${await proof()},${await proof()}`, 'dpop_multiple'],
    ['garbage', async () => 'not-a-jwt', 'dpop_malformed'],
    ['another typ', async () => proof({}, { typ: 'JWT' }), 'dpop_typ'],
    [
      'a symmetric alg',
      async () => `${Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: 'AAAA' } })).toString('base64url')}.e30.c2ln`,
      'dpop_alg',
    ],
    ['alg none', async () => `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'dpop+jwt' })).toString('base64url')}.e30.c2ln`, 'dpop_alg'],
    ['no jwk', async () => proof({}, { jwk: undefined }), 'dpop_jwk'],
    ['a private jwk', async () => proof({}, { jwk: { ...publicJwk, d: 'AAAA' } }), 'dpop_jwk_private'],
    ['a signature by another key', async () => proof({}, {}, otherKey), 'dpop_signature'],
    ['no jti', async () => proof({ jti: undefined }), 'dpop_jti'],
    ['a jti with a lone surrogate', async () => proof({ jti: 'abc\udc00' }), 'dpop_jti'],
    ['another method', async () => proof({ htm: 'GET' }), 'dpop_htm'],
    ['another URL', async () => proof({ htu: 'https://gateway.example/connectors/other/v1/payouts' }), 'dpop_htu'],
    ['an htu with userinfo', async () => proof({ htu: URL.replace('https://', 'https://agent:pw@') }), 'dpop_htu'],
    ['an htu on another scheme', async () => proof({ htu: URL.replace('https://', 'http://') }), 'dpop_htu'],
    ['an htu with a trailing slash', async () => proof({ htu: `${URL}/` }), 'dpop_htu'],
    ['an htu with a percent-encoded unreserved character', async () => proof({ htu: URL.replace('payouts', 'pay%6Fouts') }), 'dpop_htu'],
    ['an old iat', async () => proof({ iat: NOW - 301 }), 'dpop_iat'],
    ['a future iat', async () => proof({ iat: NOW + 61 }), 'dpop_iat'],
  ])('refuses %s', async (_name, make, expected) => {
    expect(await reason(await make())).toBe(expected);
  });

  it('accepts an Ed25519 key under the fully-specified alg Ed25519 (RFC 9864), as oauth4webapi signs, and under EdDSA', async () => {
    const pair = await generateKeyPair('Ed25519', { extractable: true });
    const jwk = await exportJWK(pair.publicKey);
    for (const alg of ['Ed25519', 'EdDSA']) {
      const signed = await new SignJWT({ jti: `proof-${alg}`, htm: 'POST', htu: URL, iat: NOW })
        .setProtectedHeader({ alg, typ: 'dpop+jwt', jwk })
        .sign(pair.privateKey);
      const verified = await verifyDpopProof(signed, { method: 'POST', url: URL, now: NOW });
      expect(verified.jkt).toBe(await calculateJwkThumbprint(jwk));
    }
    // The fully-specified name binds the curve: an EC key under it is refused.
    const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const ecUnderEd25519 = `${encode({ alg: 'Ed25519', typ: 'dpop+jwt', jwk: publicJwk })}.${encode({ jti: 'x', htm: 'POST', htu: URL, iat: NOW })}.${'A'.repeat(86)}`;
    expect(await reason(ecUnderEd25519)).toBe('dpop_jwk');
  });

  describe('RSA proof keys (the caller picks the key, and with it the cost of verifying)', () => {
    const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    /** A PS256-labelled proof under `jwk` whose signature is junk: only the key's shape is tried. */
    const rsaProof = (jwk: Record<string, unknown>, bits: number) =>
      `${encode({ alg: 'PS256', typ: 'dpop+jwt', jwk })}.${encode({ jti: 'x', htm: 'POST', htu: URL, iat: NOW })}.${Buffer.alloc(bits / 8, 1).toString('base64url')}`;
    const odd = (bytes: number) => {
      const value = randomBytes(bytes);
      value[0] |= 0x80;
      value[value.length - 1] |= 1;
      return value.toString('base64url');
    };

    it('accepts a 2048-bit key with exponent 65537', async () => {
      const { privateKey: rsa, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const jwk = publicKey.export({ format: 'jwk' });
      const input = `${encode({ alg: 'RS256', typ: 'dpop+jwt', jwk })}.${encode({ jti: 'rsa', htm: 'POST', htu: URL, iat: NOW })}`;
      expect(await reason(`${input}.${sign('sha256', Buffer.from(input), rsa).toString('base64url')}`)).toBe('accepted');
    });

    it.each([
      ['a 3072-bit modulus with a 3064-bit exponent', 3072, 383],
      ['a 16384-bit modulus with a 64-bit exponent', 16384, 8],
      ['a 16392-bit modulus', 16392, 3],
      ['a 1024-bit modulus', 1024, 3],
      ['exponent 1', 2048, 0],
    ])('refuses %s before verifying anything', async (_name, bits, exponentBytes) => {
      const jwk = { kty: 'RSA', n: odd(bits / 8), e: exponentBytes === 0 ? 'AQ' : odd(exponentBytes) };
      expect(await reason(rsaProof(jwk, bits))).toBe('dpop_jwk');
    });
  });

  it.each([
    ['an exp in the past', async () => proof({ exp: NOW - 1 }), 'dpop_exp'],
    ['an exp that is not a number', async () => proof({ exp: String(NOW + 60) }), 'dpop_exp'],
    ['an nbf in the future', async () => proof({ nbf: NOW + 30 }), 'dpop_nbf'],
    ['an iat that is a numeric string', async () => proof({ iat: String(NOW) }), 'dpop_iat'],
    ['an unknown critical extension', async () => signedAsIs({ crit: ['urn:x'], 'urn:x': 1 }), 'dpop_malformed'],
    ['an unencoded payload (b64: false)', async () => signedAsIs({ crit: ['b64'], b64: false }), 'dpop_malformed'],
    ['a P-384 key under ES256', async () => proof({}, { jwk: p384Jwk }), 'dpop_jwk'],
    ['a JWK of an unknown curve', async () => proof({}, { jwk: { ...publicJwk, crv: 'P-257' } }), 'dpop_jwk'],
  ])('names the member at fault in a signed proof with %s', async (_name, make, expected) => {
    expect(await reason(await make())).toBe(expected);
  });

  it.each([
    ['scheme and host in upper case', URL.replace('https://gateway.example', 'HTTPS://GATEWAY.EXAMPLE')],
    ['the default port', URL.replace('gateway.example', 'gateway.example:443')],
    ['a query and a fragment', `${URL}?a=1#f`],
  ])('matches an htu that differs by %s (RFC 9449 section 4.3, RFC 3986 section 6.2)', async (_name, htu) => {
    expect(await reason(await proof({ htu }))).toBe('accepted');
  });

  describe('hostile spellings (regressions: each holds today)', () => {
    const encode = (value: string) => Buffer.from(value).toString('base64url');
    /** A proof whose header and payload are these exact JSON texts, signed with the test key. */
    const signedText = async (headerText: string, payloadText: string) => {
      const input = `${encode(headerText)}.${encode(payloadText)}`;
      const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, Buffer.from(input));
      return `${input}.${Buffer.from(signature).toString('base64url')}`;
    };
    const header = (jwkText = JSON.stringify(publicJwk)) => `{"alg":"ES256","typ":"dpop+jwt","jwk":${jwkText}}`;
    const payload = (extra = '') => `{"jti":"hostile","htm":"POST","htu":"${URL}","iat":${NOW}${extra}}`;
    const ath = createHash('sha256').update('the-token').digest('base64url');

    it('keeps the thumbprint of the key alone, whatever other members the jwk carries', async () => {
      const decorated = { ...publicJwk, kid: 'k1', x5c: ['AAAA'], alg: 'ES256', use: 'sig', key_ops: ['verify'] };
      const verified = await verifyDpopProof(await proof({}, { jwk: decorated }), { method: 'POST', url: URL, now: NOW });
      expect(verified.jkt).toBe(await calculateJwkThumbprint(publicJwk));
    });

    it.each([
      ['an iat past what a double holds (1e400)', () => signedText(header(), payload().replace(`"iat":${NOW}`, '"iat":1e400'))],
      ['a negative iat', () => signedText(header(), payload().replace(`"iat":${NOW}`, '"iat":-1'))],
      [
        'a private key hidden under __proto__ of the jwk',
        () => signedText(header(JSON.stringify(publicJwk).replace('{', '{"__proto__":{"x":"AAAA"},')), payload()),
      ],
      ['deeply nested arrays in the header', () => signedText(header().replace('{', `{"x":${'['.repeat(2000)}${']'.repeat(2000)},`), payload())],
    ])('answers %s on its merits, without throwing anything but a refusal', async (_name, make) => {
      expect(['accepted', 'dpop_iat']).toContain(await reason(await make()));
    });

    it('reads ath only as an own member of the payload, in base64url without padding', async () => {
      const asResource = { accessToken: 'the-token', resourceServer: true };
      expect(await reason(await signedText(header(), payload(`,"__proto__":{"ath":"${ath}"}`)), asResource)).toBe('dpop_ath');
      const padded = createHash('sha256').update('the-token').digest('base64');
      expect(await reason(await signedText(header(), payload(`,"ath":"${padded}"`)), asResource)).toBe('dpop_ath');
      expect(await reason(await signedText(header(), payload(`,"ath":"${ath}"`)), asResource)).toBe('accepted');
    });

    it('keeps a jti at least until the last instant any proof with its iat is accepted, plus the skew allowed', async () => {
      for (const iat of [NOW - 300, NOW, NOW + 60]) {
        const verified = await verifyDpopProof(await proof({ jti: `kept-${iat}`, iat }), { method: 'POST', url: URL, now: NOW });
        expect(verified.expiresAt.getTime() / 1000).toBe(iat + 360);
        // One second past its acceptance window the proof is too old anyway: a purged jti is never accepted again.
        expect(await reason(await proof({ jti: `kept-${iat}`, iat }), { now: iat + 301 })).toBe('dpop_iat');
      }
    });
  });

  it('still accepts an exp in the future, and a proof without one', async () => {
    expect(await reason(await proof({ exp: NOW + 60 }))).toBe('accepted');
  });

  it('requires ath when an access token is presented', async () => {
    expect(await reason(await proof(), { accessToken: 'the-token' })).toBe('dpop_ath');
  });
});
