import { constants, KeyObject, verify as cryptoVerify } from 'node:crypto';
import type { CryptoKey } from 'jose';
import type { ClientAssertionSigningAlg } from './client-assertion.constants';

/**
 * How each accepted client-assertion `alg` is checked with `node:crypto`: digest, padding and
 * the EC curve / signature length the algorithm requires (RFC 7518 §3).
 */
const ALGORITHMS: Record<
  ClientAssertionSigningAlg,
  { hash: string | null; padding?: number; saltLength?: number; curve?: string; length?: number; keyType?: string }
> = {
  ES256: { hash: 'sha256', curve: 'prime256v1', length: 64 },
  ES384: { hash: 'sha384', curve: 'secp384r1', length: 96 },
  ES512: { hash: 'sha512', curve: 'secp521r1', length: 132 },
  RS256: { hash: 'sha256', padding: constants.RSA_PKCS1_PADDING },
  RS384: { hash: 'sha384', padding: constants.RSA_PKCS1_PADDING },
  RS512: { hash: 'sha512', padding: constants.RSA_PKCS1_PADDING },
  PS256: { hash: 'sha256', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
  PS384: { hash: 'sha384', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 },
  PS512: { hash: 'sha512', padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 },
  EdDSA: { hash: null },
  // RFC 9864: the fully-specified name allows only Ed25519 keys (EdDSA also names Ed448).
  Ed25519: { hash: null, keyType: 'ed25519' },
};

const KEY_TYPES: Record<string, ReadonlySet<string>> = {
  ES: new Set(['ec']),
  RS: new Set(['rsa']),
  PS: new Set(['rsa', 'rsa-pss']),
  Ed: new Set(['ed25519', 'ed448']),
};

/** `node:crypto` views of keys jose imported, kept as long as the imported key is. */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();

function keyObjectOf(key: CryptoKey): KeyObject {
  let keyObject = keyObjects.get(key);
  if (!keyObject) {
    keyObject = KeyObject.from(key);
    keyObjects.set(key, keyObject);
  }
  return keyObject;
}

/**
 * Checks the signature of a compact JWS (`<header>.<payload>.<signature>`, segments as
 * received) with a public key jose selected from the client's JWKS and imported.
 *
 * Hand-written on purpose, and only this step: jose 6 verifies through WebCrypto, whose
 * ECDSA/RSA jobs cost this server's single JavaScript thread 25–40 µs each (the largest item
 * of the token endpoint's profile: the client assertion is unique per request, so it cannot
 * be remembered). `node:crypto`'s callback form runs the same check on libuv's thread pool;
 * `onThreadPool: false` runs it synchronously, for a process with no core free for the pool
 * (`WRIT_ECDSA`: waking a pool thread on a busy core preempts the event loop for as long).
 * Everything else stays jose's: the header, the key selection and import (`createLocalJWKSet`),
 * and the claims (`UnsecuredJWT.decode` over the verified payload). The key must be of the
 * type the algorithm requires (and, for ECDSA, of its curve, with a signature of exactly the
 * curve's length), as WebCrypto would insist; anything else is simply not a valid signature.
 */
export async function verifyJwsSignature(
  alg: ClientAssertionSigningAlg,
  key: CryptoKey,
  signingInput: string,
  signature: Buffer,
  onThreadPool = true,
): Promise<boolean> {
  const spec = ALGORITHMS[alg];
  const keyObject = keyObjectOf(key);
  if (keyObject.type !== 'public' || !KEY_TYPES[alg.slice(0, 2)].has(keyObject.asymmetricKeyType ?? '')) return false;
  if (spec.keyType !== undefined && keyObject.asymmetricKeyType !== spec.keyType) return false;
  if (spec.curve !== undefined && (keyObject.asymmetricKeyDetails?.namedCurve !== spec.curve || signature.length !== spec.length)) return false;
  if (keyObject.asymmetricKeyType === 'rsa' || keyObject.asymmetricKeyType === 'rsa-pss') {
    // RFC 7518 §3.3/§3.5 (and jose): 2048 bits at least.
    if ((keyObject.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) return false;
  }
  const options =
    spec.curve !== undefined
      ? { key: keyObject, dsaEncoding: 'ieee-p1363' as const }
      : spec.padding !== undefined
        ? { key: keyObject, padding: spec.padding, ...(spec.saltLength !== undefined ? { saltLength: spec.saltLength } : {}) }
        : keyObject;
  const input = Buffer.from(signingInput, 'ascii');
  if (!onThreadPool) {
    try {
      return cryptoVerify(spec.hash, input, options, signature);
    } catch {
      return false;
    }
  }
  return new Promise((resolve) => {
    try {
      cryptoVerify(spec.hash, input, options, signature, (error, valid) => resolve(!error && valid));
    } catch {
      resolve(false);
    }
  });
}
