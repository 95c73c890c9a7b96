import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { JwksValidationError, type JwksFieldError } from './jwks-validation.error';
import { validateClientJwks } from './validate-client-jwks';

type Json = Record<string, unknown>;

function pair(type: 'ec' | 'rsa' | 'ed25519', options: Json = {}): { publicJwk: Json; privateJwk: Json } {
  const { publicKey, privateKey } = generateKeyPairSync(type as 'ec', options as never) as unknown as {
    publicKey: KeyObject;
    privateKey: KeyObject;
  };
  return {
    publicJwk: publicKey.export({ format: 'jwk' }),
    privateJwk: privateKey.export({ format: 'jwk' }),
  };
}

const ec256 = pair('ec', { namedCurve: 'P-256' });
const ec384 = pair('ec', { namedCurve: 'P-384' });
const ec521 = pair('ec', { namedCurve: 'P-521' });
const rsa2048 = pair('rsa', { modulusLength: 2048 });
const rsa1024 = pair('rsa', { modulusLength: 1024 });
const ed25519 = pair('ed25519');

function errorsOf(jwks: unknown, options = {}): JwksFieldError[] {
  try {
    validateClientJwks(jwks, options);
  } catch (error) {
    if (error instanceof JwksValidationError) return [...error.errors];
    throw error;
  }
  throw new Error('expected a JwksValidationError');
}

function fieldsOf(jwks: unknown, options = {}): string[] {
  return errorsOf(jwks, options).map((e) => e.field);
}

describe('validateClientJwks: accepted sets', () => {
  it('accepts EC, RSA and Ed25519 public keys and normalises them', () => {
    const result = validateClientJwks({
      keys: [
        { ...ec256.publicJwk, kid: 'ec', use: 'sig', alg: 'ES256' },
        { ...rsa2048.publicJwk, kid: 'rsa', alg: 'PS256', key_ops: ['verify'] },
        { ...ed25519.publicJwk, kid: 'ed' },
        { ...ec384.publicJwk, kid: 'ec384', alg: 'ES384' },
        { ...ec521.publicJwk, kid: 'ec521', alg: 'ES512' },
      ],
    });
    expect(result.keys).toEqual([
      { kty: 'EC', kid: 'ec', use: 'sig', alg: 'ES256', crv: 'P-256', x: ec256.publicJwk.x, y: ec256.publicJwk.y },
      { kty: 'RSA', kid: 'rsa', key_ops: ['verify'], alg: 'PS256', n: rsa2048.publicJwk.n, e: rsa2048.publicJwk.e },
      { kty: 'OKP', kid: 'ed', crv: 'Ed25519', x: ed25519.publicJwk.x },
      expect.objectContaining({ kid: 'ec384', crv: 'P-384' }),
      expect.objectContaining({ kid: 'ec521', crv: 'P-521' }),
    ]);
  });

  it('accepts an Ed25519 key labelled with either name of its algorithm (EdDSA, or Ed25519: RFC 9864)', () => {
    const result = validateClientJwks({
      keys: [
        { ...ed25519.publicJwk, kid: 'a', alg: 'EdDSA' },
        { ...ed25519.publicJwk, kid: 'b', alg: 'Ed25519' },
      ],
    });
    expect(result.keys.map((key) => key.alg)).toEqual(['EdDSA', 'Ed25519']);
  });

  it('drops x5c, x5u and unknown members instead of storing them', () => {
    const [key] = validateClientJwks({
      keys: [{ ...ec256.publicJwk, kid: 'ec', x5c: ['MIIB'], x5u: 'https://attacker.example', ext: true, foo: 1 }],
    }).keys;
    expect(Object.keys(key).sort()).toEqual(['crv', 'kid', 'kty', 'x', 'y']);
  });

  it('returns a copy, not the input', () => {
    const input = { keys: [{ ...ec256.publicJwk, kid: 'ec' }] };
    const result = validateClientJwks(input);
    expect(result.keys[0]).not.toBe(input.keys[0]);
  });

  it('accepts exactly 20 keys', () => {
    const keys = Array.from({ length: 20 }, (_, i) => ({ ...ec256.publicJwk, kid: `k${i}` }));
    expect(validateClientJwks({ keys }).keys).toHaveLength(20);
  });
});

describe('validateClientJwks: refused sets', () => {
  it('refuses an EC private key, naming the member', () => {
    expect(fieldsOf({ keys: [{ ...ec256.privateJwk, kid: 'ec' }] })).toEqual(['jwks.keys[0].d']);
  });

  it('refuses every private member of an RSA private key', () => {
    expect(fieldsOf({ keys: [{ ...rsa2048.privateJwk, kid: 'rsa' }] }).sort()).toEqual(
      ['jwks.keys[0].d', 'jwks.keys[0].dp', 'jwks.keys[0].dq', 'jwks.keys[0].p', 'jwks.keys[0].q', 'jwks.keys[0].qi'].sort(),
    );
  });

  it('refuses an Ed25519 private key', () => {
    expect(fieldsOf({ keys: [{ ...ed25519.privateJwk, kid: 'ed' }] })).toEqual(['jwks.keys[0].d']);
  });

  it('refuses symmetric keys', () => {
    const errors = errorsOf({ keys: [{ kty: 'oct', kid: 'hmac', k: 'c2VjcmV0' }] });
    expect(errors).toEqual([
      { field: 'jwks.keys[0].k', message: expect.stringContaining('private') },
      { field: 'jwks.keys[0].kty', message: expect.stringContaining('symmetric') },
    ]);
  });

  it('refuses duplicate kids', () => {
    expect(
      errorsOf({
        keys: [
          { ...ec256.publicJwk, kid: 'same' },
          { ...ed25519.publicJwk, kid: 'same' },
        ],
      }),
    ).toEqual([{ field: 'jwks.keys[1].kid', message: 'duplicates jwks.keys[0].kid' }]);
  });

  it('requires a kid on every key', () => {
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk }, { ...ec256.publicJwk, kid: '' }] })).toEqual(['jwks.keys[0].kid', 'jwks.keys[1].kid']);
  });

  it('refuses a kid with control characters or excessive length', () => {
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'a\nb' }] })).toEqual(['jwks.keys[0].kid']);
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k'.repeat(129) }] })).toEqual(['jwks.keys[0].kid']);
  });

  it('refuses an empty set and more than 20 keys', () => {
    expect(fieldsOf({ keys: [] })).toEqual(['jwks.keys']);
    const keys = Array.from({ length: 21 }, (_, i) => ({ ...ec256.publicJwk, kid: `k${i}` }));
    expect(errorsOf({ keys })).toEqual([{ field: 'jwks.keys', message: 'must contain at most 20 keys' }]);
  });

  it.each([
    ['null', null],
    ['an array', []],
    ['a string', '{"keys":[]}'],
  ])('refuses %s as the set', (_label, jwks) => {
    expect(fieldsOf(jwks)).toEqual(['jwks']);
  });

  it('refuses keys that is not an array, and unknown top-level members', () => {
    expect(fieldsOf({ keys: {} })).toEqual(['jwks.keys']);
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'a' }], jwks_uri: 'https://x' })).toEqual(['jwks.jwks_uri']);
  });

  it('refuses an RSA key under 2048 bits', () => {
    expect(fieldsOf({ keys: [{ ...rsa1024.publicJwk, kid: 'weak' }] })).toEqual(['jwks.keys[0].n']);
  });

  it.each([
    ['X25519 (key agreement)', { kty: 'OKP', crv: 'X25519', x: 'A'.repeat(43) }, 'jwks.keys[0].crv'],
    ['Ed448', { kty: 'OKP', crv: 'Ed448', x: 'A'.repeat(76) }, 'jwks.keys[0].crv'],
    ['secp256k1', { kty: 'EC', crv: 'secp256k1', x: 'A'.repeat(43), y: 'A'.repeat(43) }, 'jwks.keys[0].crv'],
    ['an unknown kty', { kty: 'AKP', pub: 'AAAA' }, 'jwks.keys[0].kty'],
    ['a missing kty', { x: 'AAAA' }, 'jwks.keys[0].kty'],
  ])('refuses %s', (_label, key, field) => {
    expect(fieldsOf({ keys: [{ ...key, kid: 'k' }] })).toEqual([field]);
  });

  it('refuses encryption keys and mismatched algs', () => {
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k', use: 'enc' }] })).toEqual(['jwks.keys[0].use']);
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k', key_ops: ['encrypt'] }] })).toEqual(['jwks.keys[0].key_ops']);
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k', alg: 'ES384' }] })).toEqual(['jwks.keys[0].alg']);
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k', alg: 'HS256' }] })).toEqual(['jwks.keys[0].alg']);
    expect(fieldsOf({ keys: [{ ...rsa2048.publicJwk, kid: 'k', alg: 'ES256' }] })).toEqual(['jwks.keys[0].alg']);
    expect(fieldsOf({ keys: [{ ...ed25519.publicJwk, kid: 'k', alg: 'ES256' }] })).toEqual(['jwks.keys[0].alg']);
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k', alg: 'Ed25519' }] })).toEqual(['jwks.keys[0].alg']);
    expect(fieldsOf({ keys: [{ ...rsa2048.publicJwk, kid: 'k', alg: 'Ed25519' }] })).toEqual(['jwks.keys[0].alg']);
    expect(fieldsOf({ keys: [{ ...rsa2048.publicJwk, kid: 'k', alg: 'none' }] })).toEqual(['jwks.keys[0].alg']);
  });

  it('refuses coordinates of the wrong size or encoding', () => {
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k', x: 'AAAA' }] })).toEqual(['jwks.keys[0].x']);
    expect(fieldsOf({ keys: [{ ...ec256.publicJwk, kid: 'k', y: `${String(ec256.publicJwk.y).slice(0, 42)}+` }] })).toEqual(['jwks.keys[0].y']);
  });

  it('refuses a point that is not on the curve', () => {
    const offCurve = { ...ec256.publicJwk, kid: 'k', y: ec256.publicJwk.x };
    expect(errorsOf({ keys: [offCurve] })).toEqual([{ field: 'jwks.keys[0]', message: 'is not a valid public key' }]);
  });

  it('reports every problem at once, with the configured field prefix', () => {
    expect(fieldsOf({ keys: [{ kty: 'oct', k: 'x' }, { ...ec256.privateJwk, kid: 'ec' }, 'nope'] }, { field: 'body.jwks' })).toEqual([
      'body.jwks.keys[0].k',
      'body.jwks.keys[0].kid',
      'body.jwks.keys[0].kty',
      'body.jwks.keys[1].d',
      'body.jwks.keys[2]',
    ]);
  });

  it('has a stable code and never includes key material in its message', () => {
    try {
      validateClientJwks({ keys: [{ ...ec256.privateJwk, kid: 'ec' }] });
    } catch (error) {
      expect(error).toBeInstanceOf(JwksValidationError);
      expect((error as JwksValidationError).code).toBe('ERR_JWKS_VALIDATION');
      expect((error as Error).message).not.toContain(String(ec256.privateJwk.d));
      return;
    }
    throw new Error('expected failure');
  });
});
