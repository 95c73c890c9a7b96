import { createHash } from 'node:crypto';
import { calculateJwkThumbprint, decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import { PRIVATE_JWK_MEMBERS } from '../client-auth/validate-client-jwks';
import { InvalidDpopProofError } from '../errors/oauth-errors';
import { hasLoneSurrogate } from '../json/json-input';
import { rsaModulusBits } from '../util/rsa-modulus-bits';

/**
 * Proof algorithms accepted (asymmetric only), as `dpop_signing_alg_values_supported`. `Ed25519`
 * is the fully-specified name of EdDSA over Ed25519 (RFC 9864), which oauth4webapi and other
 * current clients put in the proofs they sign with an Ed25519 key.
 */
export const DPOP_SIGNING_ALGS = Object.freeze(['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512'] as const);

/** The `typ` of a DPoP proof (RFC 9449 §4.2). */
export const DPOP_PROOF_TYP = 'dpop+jwt';

/** Longest proof accepted. */
const MAX_PROOF_LENGTH = 8192;
/** How old a proof may be (its `iat`), and how far in the future, in seconds. */
const MAX_PROOF_AGE_SECONDS = 300;
const MAX_PROOF_SKEW_SECONDS = 60;
/**
 * An RSA proof key: a modulus of 2048 to 16384 bits, as a registered client key, and a public
 * exponent of at most 32 bits (65537 in practice). The key comes with each request, so its size
 * is the caller's to choose: a 3072-bit modulus with a 3072-bit exponent costs one verification
 * some 8 ms of CPU, a 16384-bit one with a 64-bit exponent 6 ms, against well under 1 ms for any
 * key within these bounds but the largest (about 4 ms).
 */
const MIN_RSA_BITS = 2048;
const MAX_RSA_BITS = 16384;
const MAX_RSA_EXPONENT_BITS = 32;

/** What the request a proof must match is. */
export interface DpopProofExpectation {
  /** The request's method (`htm`). */
  method: string;
  /** The request's URL without query and fragment (`htu`). */
  url: string;
  /** At a resource server: the access token the proof must be bound to (`ath`). */
  accessToken?: string;
  /** `true` at a resource server: errors are 401 with a `DPoP` challenge. */
  resourceServer?: boolean;
  /** Current time in seconds (tests freeze it). */
  now?: number;
}

/** A proof that passed every check. */
export interface VerifiedDpopProof {
  /** RFC 7638 thumbprint of the proof's key: the `cnf.jkt` of a bound token. */
  jkt: string;
  jti: string;
  /** When its `jti` may be forgotten (after this, the proof is too old anyway). */
  expiresAt: Date;
}

/**
 * `htu` comparison: scheme and host case-insensitive, no query or fragment, default ports dropped.
 * A URL with userinfo is no `http(s)` target URI (RFC 9110 section 4.2.4 asks recipients to treat
 * it as an error) and matches nothing, as in node-oidc-provider.
 */
function normaliseUrl(value: string): string | undefined {
  try {
    const url = new URL(value);
    if (url.username !== '' || url.password !== '') return undefined;
    return `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return undefined;
  }
}

/**
 * Verifies a DPoP proof (RFC 9449 §4.3): one compact JWS of `typ: dpop+jwt` with an
 * asymmetric `alg`, signed by the public `jwk` in its header (private members refused),
 * whose `htm` and `htu` match the request, `iat` recent, `jti` present, and, at a resource
 * server, `ath` the hash of the access token. Replay of the `jti` is the caller's to check.
 */
export async function verifyDpopProof(proof: string | string[] | undefined, expect: DpopProofExpectation): Promise<VerifiedDpopProof> {
  const fail = (description: string, reason: string): never => {
    throw new InvalidDpopProofError(description, { reason, resourceServer: expect.resourceServer, algs: DPOP_SIGNING_ALGS });
  };
  if (Array.isArray(proof) || (typeof proof === 'string' && proof.includes(','))) fail('send exactly one DPoP header', 'dpop_multiple');
  if (typeof proof !== 'string' || proof === '') return fail('a DPoP proof is required', 'dpop_missing');
  if (proof.length > MAX_PROOF_LENGTH || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(proof))
    fail('the DPoP proof is not a compact JWS', 'dpop_malformed');
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(proof);
  } catch {
    return fail('the DPoP proof header is not valid', 'dpop_malformed');
  }
  if (header.typ !== DPOP_PROOF_TYP) fail('the DPoP proof must have typ dpop+jwt', 'dpop_typ');
  if (typeof header.alg !== 'string' || !(DPOP_SIGNING_ALGS as readonly string[]).includes(header.alg))
    fail('the DPoP proof algorithm is not accepted', 'dpop_alg');
  const jwk = header.jwk;
  if (!jwk || typeof jwk !== 'object') return fail('the DPoP proof carries no public key', 'dpop_jwk');
  if (PRIVATE_JWK_MEMBERS.some((member) => member in jwk)) fail('the DPoP proof key must be a public key', 'dpop_jwk_private');
  if (jwk.kty === 'RSA') {
    const [bits, exponentBits] = [rsaModulusBits(jwk.n), rsaModulusBits(jwk.e)];
    if (
      bits === undefined ||
      bits < MIN_RSA_BITS ||
      bits > MAX_RSA_BITS ||
      exponentBits === undefined ||
      exponentBits < 2 ||
      exponentBits > MAX_RSA_EXPONENT_BITS
    ) {
      fail(
        `the DPoP proof key must be an RSA key of ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits with a public exponent of at most ${MAX_RSA_EXPONENT_BITS} bits`,
        'dpop_jwk',
      );
    }
  }
  const now = expect.now ?? Math.floor(Date.now() / 1000);
  let key: Awaited<ReturnType<typeof importJWK>>;
  try {
    key = await importJWK(jwk, header.alg);
  } catch {
    return fail(`the DPoP proof key is not a valid public key for ${header.alg}`, 'dpop_jwk');
  }
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(proof, key, { typ: DPOP_PROOF_TYP, algorithms: [header.alg!], currentDate: new Date(now * 1000) }));
  } catch (error) {
    // jose checks the claims only once the signature holds: say which one is wrong.
    const { code, claim } = error as { code?: string; claim?: string };
    if (code === 'ERR_JWT_EXPIRED') return fail('the DPoP proof has expired (exp)', 'dpop_exp');
    if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && (claim === 'exp' || claim === 'nbf' || claim === 'iat')) {
      return fail(claim === 'nbf' ? 'the DPoP proof is not valid yet (nbf)' : `the DPoP proof ${claim} must be a number`, `dpop_${claim}`);
    }
    if (code === 'ERR_JOSE_NOT_SUPPORTED' || code === 'ERR_JWS_INVALID' || code === 'ERR_JWT_INVALID') {
      return fail('the DPoP proof is not a JWT of a JSON object without critical extensions (crit)', 'dpop_malformed');
    }
    return fail('the DPoP proof signature is not valid', 'dpop_signature');
  }
  const { jti, htm, htu, iat, ath } = payload;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256 || /[\u0000-\u001f\u007f]/.test(jti) || hasLoneSurrogate(jti))
    fail('the DPoP proof needs a jti', 'dpop_jti');
  if (htm !== expect.method) fail('the DPoP proof is for another method', 'dpop_htm');
  if (typeof htu !== 'string' || normaliseUrl(htu) === undefined || normaliseUrl(htu) !== normaliseUrl(expect.url))
    fail('the DPoP proof is for another URL', 'dpop_htu');
  if (typeof iat !== 'number' || !Number.isFinite(iat) || iat < now - MAX_PROOF_AGE_SECONDS || iat > now + MAX_PROOF_SKEW_SECONDS) {
    fail('the DPoP proof is too old or from the future', 'dpop_iat');
  }
  if (expect.accessToken !== undefined) {
    const expected = createHash('sha256').update(expect.accessToken, 'ascii').digest('base64url');
    if (ath !== expected) fail('the DPoP proof is not bound to this access token', 'dpop_ath');
  }
  return {
    jkt: await calculateJwkThumbprint(jwk, 'sha256'),
    jti: jti as string,
    expiresAt: new Date(((iat as number) + MAX_PROOF_AGE_SECONDS + MAX_PROOF_SKEW_SECONDS) * 1000),
  };
}
