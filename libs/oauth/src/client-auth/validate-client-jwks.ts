import { createPublicKey } from 'node:crypto';
import { rsaModulusBits } from '../util/rsa-modulus-bits';
import { isClientAssertionSigningAlg, type ClientAssertionSigningAlg } from './client-assertion.constants';
import { JwksValidationError, type JwksFieldError } from './jwks-validation.error';

/** A public signing key as stored for a client: only these members, nothing private. */
export interface PublicJwk {
  readonly kty: 'EC' | 'RSA' | 'OKP';
  readonly kid: string;
  readonly use?: 'sig';
  readonly key_ops?: readonly ['verify'];
  readonly alg?: ClientAssertionSigningAlg;
  readonly crv?: string;
  readonly x?: string;
  readonly y?: string;
  readonly n?: string;
  readonly e?: string;
}

/** A normalised client JWKS. */
export interface PublicJwks {
  readonly keys: readonly PublicJwk[];
}

/** Options of {@link validateClientJwks}. */
export interface ValidateClientJwksOptions {
  /** Path prefix of reported fields. Default `jwks`. */
  readonly field?: string;
  /** Most keys in one set. Default 20. */
  readonly maxKeys?: number;
}

const DEFAULT_MAX_KEYS = 20;
const MAX_KID_LENGTH = 128;
const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 16384;
/** JWK members that carry private or symmetric key material: never accepted where a public key is expected. */
export const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k', 'priv'] as const;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** Coordinate octet lengths per curve (RFC 7518 §6.2.1.2, RFC 8037 §2). */
const EC_COORDINATE_BYTES: Readonly<Record<string, number>> = { 'P-256': 32, 'P-384': 48, 'P-521': 66 };
const EC_ALG: Readonly<Record<string, ClientAssertionSigningAlg>> = {
  'P-256': 'ES256',
  'P-384': 'ES384',
  'P-521': 'ES512',
};
const RSA_ALGS = new Set<string>(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function base64urlBytes(value: unknown): number | undefined {
  if (typeof value !== 'string' || !BASE64URL.test(value) || value.length % 4 === 1) return undefined;
  return Buffer.from(value, 'base64url').length;
}

function validateKey(raw: unknown, path: string, errors: JwksFieldError[]): PublicJwk | undefined {
  const before = errors.length;
  const fail = (field: string, message: string) => errors.push({ field: `${path}${field}`, message });
  if (!isPlainObject(raw)) {
    fail('', 'must be a JSON object');
    return undefined;
  }
  for (const member of PRIVATE_JWK_MEMBERS) {
    if (Object.hasOwn(raw, member)) {
      fail(`.${member}`, 'private key members are not accepted: register the public key only');
    }
  }
  const { kty, kid, use, key_ops: keyOps, alg, crv } = raw;

  if (typeof kid !== 'string' || kid.length === 0) fail('.kid', 'is required');
  else if (kid.length > MAX_KID_LENGTH || !/^[\x21-\x7e]+$/.test(kid)) {
    fail('.kid', `must be at most ${MAX_KID_LENGTH} printable ASCII characters`);
  }
  if (use !== undefined && use !== 'sig') fail('.use', 'must be "sig"');
  if (keyOps !== undefined && !(Array.isArray(keyOps) && keyOps.length === 1 && keyOps[0] === 'verify')) {
    fail('.key_ops', 'must be ["verify"]');
  }
  if (alg !== undefined && !isClientAssertionSigningAlg(alg)) {
    fail('.alg', 'must be one of the accepted asymmetric signing algorithms');
  }

  switch (kty) {
    case 'EC': {
      const size = typeof crv === 'string' ? EC_COORDINATE_BYTES[crv] : undefined;
      if (size === undefined) fail('.crv', 'must be P-256, P-384 or P-521');
      else {
        if (base64urlBytes(raw.x) !== size) fail('.x', `must be the base64url ${size}-byte coordinate`);
        if (base64urlBytes(raw.y) !== size) fail('.y', `must be the base64url ${size}-byte coordinate`);
        if (isClientAssertionSigningAlg(alg) && alg !== EC_ALG[crv as string]) {
          fail('.alg', `does not match crv ${String(crv)}`);
        }
      }
      break;
    }
    case 'RSA': {
      const bits = rsaModulusBits(raw.n);
      if (bits === undefined) fail('.n', 'must be base64url');
      else if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS) {
        fail('.n', `must be a ${MIN_RSA_BITS} to ${MAX_RSA_BITS}-bit modulus`);
      }
      if (base64urlBytes(raw.e) === undefined) fail('.e', 'must be base64url');
      if (isClientAssertionSigningAlg(alg) && !RSA_ALGS.has(alg)) fail('.alg', 'does not match kty RSA');
      break;
    }
    case 'OKP': {
      if (crv !== 'Ed25519') fail('.crv', 'must be Ed25519');
      else if (base64urlBytes(raw.x) !== 32) fail('.x', 'must be the base64url 32-byte public key');
      if (isClientAssertionSigningAlg(alg) && alg !== 'EdDSA' && alg !== 'Ed25519') fail('.alg', 'does not match kty OKP');
      break;
    }
    case 'oct':
      fail('.kty', 'symmetric keys are not accepted: there are no client secrets');
      break;
    default:
      fail('.kty', 'must be EC, RSA or OKP');
  }
  if (errors.length > before) return undefined;

  const jwk: Record<string, unknown> = { kty, kid };
  if (use !== undefined) jwk.use = use;
  if (keyOps !== undefined) jwk.key_ops = ['verify'];
  if (alg !== undefined) jwk.alg = alg;
  if (kty === 'RSA') Object.assign(jwk, { n: raw.n, e: raw.e });
  else if (kty === 'EC') Object.assign(jwk, { crv, x: raw.x, y: raw.y });
  else Object.assign(jwk, { crv, x: raw.x });

  // Well-formed members can still describe no key (e.g. a point off the curve).
  try {
    const members = { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, n: jwk.n, e: jwk.e };
    const key = createPublicKey({ key: members as never, format: 'jwk' });
    if (key.type !== 'public') throw new Error('not public');
  } catch {
    fail('', 'is not a valid public key');
    return undefined;
  }
  return jwk as unknown as PublicJwk;
}

/**
 * Validates a client's JWKS at registration and returns a normalised copy with only the
 * public members kept (`x5c`, `x5u` and other extras dropped: never trusted anyway).
 * Refuses: anything but `{keys: [...]}`, an empty set or more than 20 keys, private
 * members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`), symmetric (`oct`) keys, a key
 * without `kid` or with a duplicate `kid`, key types other than EC (P-256/384/521), RSA
 * (2048 bits or more) and OKP (Ed25519), encryption-only keys, and keys that do not
 * parse. Every problem is reported in one {@link JwksValidationError}.
 */
export function validateClientJwks(jwks: unknown, options: ValidateClientJwksOptions = {}): PublicJwks {
  const root = options.field ?? 'jwks';
  const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
  const errors: JwksFieldError[] = [];
  if (!isPlainObject(jwks)) {
    throw new JwksValidationError([{ field: root, message: 'must be a JSON object {"keys": [...]}' }]);
  }
  for (const member of Object.keys(jwks)) {
    if (member !== 'keys') errors.push({ field: `${root}.${member}`, message: 'is not a JWKS member' });
  }
  const { keys } = jwks;
  if (!Array.isArray(keys)) {
    errors.push({ field: `${root}.keys`, message: 'must be an array' });
    throw new JwksValidationError(errors);
  }
  if (keys.length === 0) errors.push({ field: `${root}.keys`, message: 'must contain at least one key' });
  if (keys.length > maxKeys) {
    errors.push({ field: `${root}.keys`, message: `must contain at most ${maxKeys} keys` });
    throw new JwksValidationError(errors);
  }

  const normalised: PublicJwk[] = [];
  const kids = new Map<string, number>();
  keys.forEach((raw: unknown, index) => {
    const path = `${root}.keys[${index}]`;
    const jwk = validateKey(raw, path, errors);
    if (jwk) normalised.push(jwk);
    const kid = isPlainObject(raw) ? raw.kid : undefined;
    if (typeof kid === 'string' && kid !== '') {
      const first = kids.get(kid);
      if (first !== undefined) errors.push({ field: `${path}.kid`, message: `duplicates ${root}.keys[${first}].kid` });
      else kids.set(kid, index);
    }
  });
  if (errors.length > 0) throw new JwksValidationError(errors);
  return { keys: normalised };
}
