import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { exportJWK, exportSPKI, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { InvalidClientError } from '../errors/oauth-errors';
import type { ClientAuthFailureReason } from './client-auth-failure';
import { verifyClientAssertion, type VerifyClientAssertionOptions } from './verify-client-assertion';

const ISSUER = 'http://localhost:4000';
const TOKEN_ENDPOINT = `${ISSUER}/oauth2/token`;
const CLIENT_ID = 'agent_7f3a';
const NOW = new Date('2030-01-01T00:00:00Z');
const NOW_S = Math.floor(NOW.getTime() / 1000);

interface TestKey {
  alg: string;
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

async function makeKey(alg: string, kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid } };
}

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function claims(overrides: Record<string, unknown> = {}): JWTPayload {
  const base: Record<string, unknown> = {
    iss: CLIENT_ID,
    sub: CLIENT_ID,
    aud: ISSUER,
    iat: NOW_S,
    exp: NOW_S + 120,
    jti: randomUUID(),
  };
  for (const [name, value] of Object.entries(overrides)) {
    if (value === undefined) delete base[name];
    else base[name] = value;
  }
  return base;
}

async function sign(key: TestKey, overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Promise<string> {
  const protectedHeader: Record<string, unknown> = { alg: key.alg, kid: key.kid, ...header };
  for (const [name, value] of Object.entries(header)) if (value === undefined) delete protectedHeader[name];
  return new SignJWT(claims(overrides)).setProtectedHeader(protectedHeader as { alg: string }).sign(key.privateKey);
}

async function failure(promise: Promise<unknown>): Promise<InvalidClientError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof InvalidClientError) return error;
    throw error;
  }
  throw new Error('expected invalid_client');
}

let es256: TestKey;
let ps256: TestKey;
let rs256: TestKey;
let eddsa: TestKey;
let attacker: TestKey;

beforeAll(async () => {
  [es256, ps256, rs256, eddsa, attacker] = await Promise.all([
    makeKey('ES256', 'key-es'),
    makeKey('PS256', 'key-ps'),
    makeKey('RS256', 'key-rs'),
    makeKey('EdDSA', 'key-ed'),
    makeKey('ES256', 'key-es'), // same kid as the registered key, different key
  ]);
});

function verify(assertion: string, extra: Partial<VerifyClientAssertionOptions> = {}) {
  return verifyClientAssertion({
    assertion,
    clientId: CLIENT_ID,
    issuer: ISSUER,
    jwks: { keys: [es256.publicJwk, ps256.publicJwk, rs256.publicJwk, eddsa.publicJwk] },
    now: NOW,
    ...extra,
  });
}

async function expectReason(assertion: string | Promise<string>, reason: ClientAuthFailureReason, extra = {}) {
  const error = await failure(verify(await assertion, extra));
  expect(error.reason).toBe(reason);
  expect(error.status).toBe(401);
  expect(error.error).toBe('invalid_client');
  return error;
}

describe('verifyClientAssertion: accepted assertions', () => {
  it('accepts a well-formed ES256 assertion and reports what verified it', async () => {
    const jti = 'jti-123';
    const result = await verify(await sign(es256, { jti, exp: NOW_S + 60 }));
    expect(result).toEqual({
      clientId: CLIENT_ID,
      jti,
      expiresAt: new Date((NOW_S + 60) * 1000),
      alg: 'ES256',
      kid: 'key-es',
    });
  });

  it.each([
    ['PS256', () => ps256],
    ['RS256', () => rs256],
    ['EdDSA', () => eddsa],
  ])('accepts %s', async (alg, key) => {
    const result = await verify(await sign(key()));
    expect(result.alg).toBe(alg);
    expect(result.kid).toBe(key().kid);
  });

  it('accepts the fully-specified alg Ed25519 (RFC 9864) from an Ed25519 key, as oauth4webapi signs', async () => {
    const result = await verify(await sign({ ...eddsa, alg: 'Ed25519' }));
    expect(result).toMatchObject({ alg: 'Ed25519', kid: 'key-ed' });
  });

  it('refuses Ed25519 from a key registered for EdDSA only, or from a key of another type', async () => {
    const labelled = { ...eddsa.publicJwk, alg: 'EdDSA' };
    await expectReason(sign({ ...eddsa, alg: 'Ed25519' }), 'assertion_key', { jwks: { keys: [labelled] } });
    // An EC key under the Ed25519 name: no registered key fits, and no signature is checked.
    await expectReason(`${b64({ alg: 'Ed25519', kid: 'key-es' })}.${b64(claims())}.AAAA`, 'assertion_key');
  });

  it('finds the key without a kid header and reports its kid', async () => {
    const result = await verify(await sign(es256, {}, { kid: undefined }));
    expect(result.kid).toBe('key-es');
  });

  it('tries every matching key when several fit a header without kid', async () => {
    const second = await makeKey('ES256', 'key-es-2');
    const result = await verify(await sign(second, {}, { kid: undefined }), {
      jwks: { keys: [es256.publicJwk, second.publicJwk] },
    });
    expect(result.kid).toBe('key-es-2');
  });

  it.each(['JWT', 'client-authentication+jwt', 'application/client-authentication+jwt'])('accepts typ %s', async (typ) => {
    await expect(verify(await sign(es256, {}, { typ }))).resolves.toMatchObject({ clientId: CLIENT_ID });
  });

  it('accepts an assertion without iat or nbf', async () => {
    await expect(verify(await sign(es256, { iat: undefined }))).resolves.toMatchObject({ clientId: CLIENT_ID });
  });

  it('accepts exp exactly at the lifetime bound plus tolerance (300 + 30 s)', async () => {
    await expect(verify(await sign(es256, { exp: NOW_S + 330 }))).resolves.toBeDefined();
  });

  it('accepts an exp that passed within the clock tolerance', async () => {
    await expect(verify(await sign(es256, { exp: NOW_S - 29 }))).resolves.toBeDefined();
  });

  it('honours custom lifetime and tolerance', async () => {
    await expectReason(sign(es256, { exp: NOW_S + 100 }), 'assertion_lifetime', {
      maxLifetimeSeconds: 60,
      clockToleranceSeconds: 0,
    });
  });
});

describe('verifyClientAssertion: attacks', () => {
  it('refuses alg none', async () => {
    const unsigned = `${b64({ alg: 'none' })}.${b64(claims())}.`;
    await expectReason(unsigned, 'assertion_alg');
  });

  it('refuses alg none even with a dummy signature', async () => {
    await expectReason(`${b64({ alg: 'none', kid: 'key-es' })}.${b64(claims())}.AAAA`, 'assertion_alg');
  });

  it.each(['HS256', 'HS384', 'HS512'])('refuses %s signed with the public key bytes (key confusion)', async (alg) => {
    const spki = await exportSPKI((await importJWK(rs256.publicJwk, 'RS256')) as CryptoKey);
    const secretCandidates = [new TextEncoder().encode(JSON.stringify(rs256.publicJwk)), new TextEncoder().encode(spki)];
    for (const secret of secretCandidates) {
      const forged = await new SignJWT(claims()).setProtectedHeader({ alg, kid: 'key-rs' }).sign(secret);
      await expectReason(forged, 'assertion_alg');
    }
  });

  it.each(['ES256K', 'Ed448', 'RSA-OAEP', 'ML-DSA-44', 'es256'])('refuses non-allowlisted alg %s', async (alg) => {
    await expectReason(`${b64({ alg, kid: 'key-es' })}.${b64(claims())}.AAAA`, 'assertion_alg');
  });

  it('refuses a signature by a key that is not in the JWKS (same kid)', async () => {
    await expectReason(sign(attacker), 'assertion_signature');
  });

  it('refuses a signature by a key that is not in the JWKS (unknown kid)', async () => {
    await expectReason(sign({ ...attacker, kid: 'attacker' }), 'assertion_key');
  });

  it('refuses an alg that does not fit the registered key type', async () => {
    // An RS256 header naming the EC key's kid: no usable key.
    await expectReason(sign(rs256, {}, { kid: 'key-es' }), 'assertion_key');
  });

  it('refuses a self-contained key in the jwk header, even the attacker-signed one', async () => {
    await expectReason(sign(attacker, {}, { jwk: attacker.publicJwk, kid: undefined }), 'assertion_header');
  });

  it('refuses a jwk header even when it is the registered key', async () => {
    await expectReason(sign(es256, {}, { jwk: es256.publicJwk }), 'assertion_header');
  });

  it.each([
    ['jku', 'https://attacker.example/jwks.json'],
    ['x5u', 'https://attacker.example/cert.pem'],
    ['x5c', ['MIIB']],
  ])('refuses the %s header', async (name, value) => {
    await expectReason(sign(es256, {}, { [name]: value }), 'assertion_header');
  });

  it('refuses an aud array, even one holding only the issuer', async () => {
    await expectReason(sign(es256, { aud: [ISSUER] }), 'assertion_audience');
    await expectReason(sign(es256, { aud: [ISSUER, 'https://other.example'] }), 'assertion_audience');
  });

  it('refuses the token endpoint URL as aud (draft-ietf-oauth-rfc7523bis)', async () => {
    const error = await expectReason(sign(es256, { aud: TOKEN_ENDPOINT }), 'assertion_audience');
    expect(error.toJSON()).toEqual({
      error: 'invalid_client',
      error_description: 'client assertion audience must be the issuer identifier',
    });
  });

  it.each([
    ['missing', undefined],
    ['with a trailing slash', `${ISSUER}/`],
    ['another server', 'https://other.example'],
    ['differently cased', ISSUER.toUpperCase()],
  ])('refuses an aud %s', async (_label, aud) => {
    await expectReason(sign(es256, { aud }), 'assertion_audience');
  });

  it('refuses an expired assertion', async () => {
    await expectReason(sign(es256, { exp: NOW_S - 31 }), 'assertion_expired');
  });

  it('refuses an exp more than 5 minutes ahead', async () => {
    await expectReason(sign(es256, { exp: NOW_S + 331 }), 'assertion_lifetime');
    await expectReason(sign(es256, { exp: NOW_S + 86_400 * 365 }), 'assertion_lifetime');
  });

  it('refuses an assertion without exp', async () => {
    await expectReason(sign(es256, { exp: undefined }), 'assertion_lifetime');
  });

  it('refuses a non-numeric exp', async () => {
    await expectReason(sign(es256, { exp: String(NOW_S + 60) }), 'assertion_lifetime');
  });

  it('refuses an nbf in the future', async () => {
    await expectReason(sign(es256, { nbf: NOW_S + 60 }), 'assertion_not_yet_valid');
  });

  it('refuses an iat in the future beyond the tolerance', async () => {
    await expectReason(sign(es256, { iat: NOW_S + 31 }), 'assertion_iat');
    await expect(verify(await sign(es256, { iat: NOW_S + 30 }))).resolves.toBeDefined();
  });

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['a number', 12345],
    ['longer than 256 characters', 'j'.repeat(257)],
    ['with a NUL character', 'abc\u0000def'],
    ['with a line break', 'abc\ndef'],
    // Stored as U+FFFD by PostgreSQL: another jti than the one checked, and equal to every other one.
    ['with a lone surrogate', 'abc\ud800def'],
  ])('refuses a jti %s', async (_label, jti) => {
    await expectReason(sign(es256, { jti }), 'assertion_jti');
  });

  it('accepts a jti of exactly 256 characters', async () => {
    await expect(verify(await sign(es256, { jti: 'j'.repeat(256) }))).resolves.toMatchObject({ jti: 'j'.repeat(256) });
  });

  it('refuses iss different from sub', async () => {
    await expectReason(sign(es256, { sub: 'agent_other' }), 'assertion_subject');
  });

  it('refuses an assertion issued by another client', async () => {
    await expectReason(sign(es256, { iss: 'agent_other', sub: 'agent_other' }), 'assertion_issuer');
  });

  it('refuses an assertion verified against the wrong client id', async () => {
    await expectReason(sign(es256), 'assertion_issuer', { clientId: 'agent_other' });
  });

  it('refuses a tampered payload', async () => {
    const genuine = await sign(es256);
    const [header, , signature] = genuine.split('.');
    const tampered = `${header}.${b64(claims({ iss: CLIENT_ID, sub: CLIENT_ID, exp: NOW_S + 200 }))}.${signature}`;
    await expectReason(tampered, 'assertion_signature');
  });

  it('refuses a tampered header', async () => {
    const genuine = await sign(es256);
    const [, payload, signature] = genuine.split('.');
    await expectReason(`${b64({ alg: 'ES256', kid: 'key-es', typ: 'JWT' })}.${payload}.${signature}`, 'assertion_signature');
  });

  it.each(['at+jwt', 'dpop+jwt', 'JWS', 'token-introspection+jwt'])('refuses another JWT type (%s)', async (typ) => {
    await expectReason(sign(es256, {}, { typ }), 'assertion_typ');
  });

  it('refuses an unknown critical header', async () => {
    const assertion = await new SignJWT(claims())
      .setProtectedHeader({ alg: 'ES256', kid: 'key-es', crit: ['exotic'], exotic: true })
      .sign(es256.privateKey, { crit: { exotic: true } });
    await expectReason(assertion, 'assertion_malformed');
  });

  it.each([
    ['garbage', 'not-a-jwt'],
    ['a JWE-shaped value', 'a.b.c.d.e'],
    ['an undecodable header', 'e30x.e30.AAAA'],
    ['a header that is not an object', `${Buffer.from('"x"').toString('base64url')}.e30.AAAA`],
    ['an oversized value', `${b64({ alg: 'ES256' })}.${'A'.repeat(9000)}.AAAA`],
  ])('refuses %s as malformed', async (_label, assertion) => {
    await expectReason(assertion, 'assertion_malformed');
  });

  it('refuses a payload that is not JSON even when correctly signed', async () => {
    const { CompactSign } = await import('jose');
    const jws = await new CompactSign(new TextEncoder().encode('not json')).setProtectedHeader({ alg: 'ES256', kid: 'key-es' }).sign(es256.privateKey);
    await expectReason(jws, 'assertion_malformed');
  });

  it('never echoes the assertion in the error', async () => {
    const assertion = await sign(es256, { aud: TOKEN_ENDPOINT });
    const error = await failure(verify(assertion));
    const wire = JSON.stringify(error);
    for (const part of assertion.split('.')) expect(wire).not.toContain(part);
    expect(error.message).not.toContain(assertion.split('.')[1]);
  });
});

describe('verifyClientAssertion: registered JWKS problems', () => {
  it('refuses to use a private key found in the JWKS', async () => {
    const privateJwk = { ...(await exportJWK(es256.privateKey)), kid: 'key-es' };
    await expectReason(sign(es256), 'client_jwks_invalid', { jwks: { keys: [privateJwk] } });
  });

  it('refuses a malformed JWKS', async () => {
    await expectReason(sign(es256), 'client_jwks_invalid', { jwks: { keys: 'nope' } as never });
  });

  it('treats a registered key WebCrypto cannot import as an invalid JWKS, not a crash', async () => {
    const broken = { ...es256.publicJwk, x: 'AAAA' };
    await expectReason(sign(es256), 'client_jwks_invalid', { jwks: { keys: [broken] } });
  });

  it('ignores RSA keys under 2048 bits instead of crashing', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const weakPublic = { ...publicKey.export({ format: 'jwk' }), kid: 'weak' } as JWK;
    // jose refuses to sign with it too, so forge the signature with node:crypto.
    const { createSign } = await import('node:crypto');
    const input = `${b64({ alg: 'RS256', kid: 'weak' })}.${b64(claims())}`;
    const signature = createSign('RSA-SHA256').update(input).sign(privateKey).toString('base64url');
    await expectReason(`${input}.${signature}`, 'assertion_key', { jwks: { keys: [weakPublic] } });
  });

  it('refuses when the JWKS is empty', async () => {
    await expectReason(sign(es256), 'assertion_key', { jwks: { keys: [] } });
  });
});
