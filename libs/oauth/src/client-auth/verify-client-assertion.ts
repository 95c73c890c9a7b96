import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  exportJWK,
  UnsecuredJWT,
  type CryptoKey,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose';
import type { InvalidClientError } from '../errors/oauth-errors';
import {
  CLIENT_ASSERTION_SIGNING_ALGS,
  DEFAULT_ASSERTION_CLOCK_TOLERANCE_SECONDS,
  DEFAULT_ASSERTION_MAX_LIFETIME_SECONDS,
  FORBIDDEN_ASSERTION_HEADERS,
  isClientAssertionSigningAlg,
  MAX_ASSERTION_JTI_LENGTH,
  MAX_ASSERTION_LENGTH,
  type ClientAssertionSigningAlg,
} from './client-assertion.constants';
import { hasLoneSurrogate } from '../json/json-input';
import { rsaModulusBits } from '../util/rsa-modulus-bits';
import { clientAuthenticationFailed, type ClientAuthFailureReason } from './client-auth-failure';
import { verifyJwsSignature } from './verify-jws-signature';

/** Input of {@link verifyClientAssertion}. */
export interface VerifyClientAssertionOptions {
  /** The compact JWS from `client_assertion`. */
  readonly assertion: string;
  /** The registered client whose JWKS is given (from `readClientAssertion`). */
  readonly clientId: string;
  /** This server's issuer identifier (`WRIT_ISSUER`): the only accepted `aud`. */
  readonly issuer: string;
  /** The client's registered public keys. */
  readonly jwks: JSONWebKeySet;
  /** The clock; tests freeze it. Default: now. */
  readonly now?: Date;
  /** Most seconds `exp` may lie ahead of now (plus the tolerance). Default 300. */
  readonly maxLifetimeSeconds?: number;
  /** Clock skew tolerated on `exp`, `nbf`, `iat` and the lifetime bound. Default 30. */
  readonly clockToleranceSeconds?: number;
  /** Check the signature on libuv's thread pool (default) or synchronously: see {@link verifyJwsSignature}. */
  readonly ecdsaOnThreadPool?: boolean;
}

/** A verified client assertion: who authenticated, with what, and the `jti` to mark as used. */
export interface VerifiedClientAssertion {
  readonly clientId: string;
  /** To record in the {@link JtiStore} before the request proceeds. */
  readonly jti: string;
  /** The assertion's `exp`. */
  readonly expiresAt: Date;
  readonly alg: ClientAssertionSigningAlg;
  /** `kid` of the registered key that verified the signature, when it has one. */
  readonly kid: string | undefined;
}

/** `typ` values accepted: none, plain `JWT`, or the explicit type of draft-ietf-oauth-rfc7523bis. */
const ACCEPTED_TYPS = new Set(['jwt', 'client-authentication+jwt']);

function normaliseTyp(typ: string): string {
  const lower = typ.toLowerCase();
  return lower.startsWith('application/') ? lower.slice('application/'.length) : lower;
}

/** Maps a jose failure to an `invalid_client` with a stable reason; unexpected errors pass through. */
function toClientError(error: unknown): unknown {
  const fail = (reason: ClientAuthFailureReason) => clientAuthenticationFailed(reason, error);
  if (error instanceof errors.JWSSignatureVerificationFailed) return fail('assertion_signature');
  if (error instanceof errors.JWKSNoMatchingKey) return fail('assertion_key');
  if (error instanceof errors.JOSEAlgNotAllowed) return fail('assertion_alg');
  // JWTExpired extends JWTClaimValidationFailed: test it first.
  if (error instanceof errors.JWTExpired) return fail('assertion_expired');
  if (error instanceof errors.JWTClaimValidationFailed) {
    switch (error.claim) {
      case 'nbf':
        return fail(error.reason === 'check_failed' ? 'assertion_not_yet_valid' : 'assertion_malformed');
      case 'exp':
        return fail('assertion_lifetime');
      case 'iat':
        return fail('assertion_iat');
      default:
        return fail('assertion_malformed');
    }
  }
  if (error instanceof errors.JWKSInvalid) return fail('client_jwks_invalid');
  if (error instanceof errors.JOSEError) return fail('assertion_malformed');
  return error;
}

/**
 * A registered key that WebCrypto cannot import is the registration's fault, not the
 * caller's: report it as an invalid JWKS rather than letting a DOMException become a 500.
 */
function guardKeySet(keySet: JWTVerifyGetKey): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await keySet(header, token);
    } catch (error) {
      if (error instanceof errors.JOSEError) throw error;
      throw new errors.JWKSInvalid('a registered key could not be imported', { cause: error });
    }
  };
}

/**
 * RSA keys under 2048 bits make jose throw a plain TypeError at verification time; leave
 * them out so they simply match nothing (registration refuses them anyway).
 */
/**
 * Key sets by JWKS object: a caller that keeps the same JWKS object (a client cache) gets
 * its imported keys reused instead of importing them on every assertion.
 */
const keySets = new WeakMap<object, JWTVerifyGetKey>();

function keySetFor(jwks: JSONWebKeySet): JWTVerifyGetKey {
  const cacheable = jwks !== null && typeof jwks === 'object';
  const cached = cacheable ? keySets.get(jwks) : undefined;
  if (cached) return cached;
  const keySet = guardKeySet(createLocalJWKSet(usableKeys(jwks)));
  if (cacheable) keySets.set(jwks, keySet);
  return keySet;
}

function usableKeys(jwks: JSONWebKeySet): JSONWebKeySet {
  if (jwks === null || typeof jwks !== 'object' || !Array.isArray(jwks.keys)) return jwks;
  return {
    keys: jwks.keys.filter((jwk) => jwk === null || typeof jwk !== 'object' || jwk.kty !== 'RSA' || (rsaModulusBits(jwk.n) ?? 0) >= 2048),
  };
}

/** The protected header `{"alg":"none"}`, to hand a verified payload to jose's claims checks. */
const UNSECURED_HEADER = Buffer.from('{"alg":"none"}').toString('base64url');

/** A compact JWS segment: base64url without padding. */
const SEGMENT = /^[A-Za-z0-9_-]*$/;

/**
 * The signature (see {@link verifyJwsSignature}: `node:crypto` on the thread pool), then the
 * times: jose's claims-set checks (`exp`, `nbf`, `iat`, a JSON object payload), run on the
 * verified payload segment unchanged, exactly as `jwtVerify` would after its own signature check.
 */
type VerifyWithOptions = JWTVerifyOptions & { onThreadPool: boolean };

async function verifyWith(assertion: string, alg: ClientAssertionSigningAlg, key: CryptoKey, options: VerifyWithOptions): Promise<JWTPayload> {
  const [header, payload, signature] = assertion.split('.');
  if (!(await verifyJwsSignature(alg, key, `${header}.${payload}`, Buffer.from(signature, 'base64url'), options.onThreadPool))) {
    throw new errors.JWSSignatureVerificationFailed();
  }
  return UnsecuredJWT.decode(`${UNSECURED_HEADER}.${payload}.`, { currentDate: options.currentDate, clockTolerance: options.clockTolerance }).payload;
}

async function verifySignatureAndTimes(
  assertion: string,
  header: JWSHeaderParameters,
  alg: ClientAssertionSigningAlg,
  keySet: JWTVerifyGetKey,
  options: VerifyWithOptions,
): Promise<{ payload: JWTPayload; key: CryptoKey | undefined }> {
  const [, payloadSegment, signature] = assertion.split('.');
  try {
    const key = (await keySet({ ...header, alg }, { payload: payloadSegment, signature })) as CryptoKey;
    return { payload: await verifyWith(assertion, alg, key, options), key };
  } catch (error) {
    if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw toClientError(error);
    // Several registered keys fit a header without `kid`: try each (jose's documented pattern).
    for await (const candidate of error) {
      try {
        return { payload: await verifyWith(assertion, alg, candidate, options), key: candidate };
      } catch (inner) {
        if (inner instanceof errors.JWSSignatureVerificationFailed) continue;
        throw toClientError(inner);
      }
    }
    throw clientAuthenticationFailed('assertion_signature');
  }
}

async function kidOf(jwks: JSONWebKeySet, header: JWSHeaderParameters, key: CryptoKey | undefined): Promise<string | undefined> {
  if (typeof header.kid === 'string') return header.kid;
  if (key === undefined) return undefined;
  try {
    const thumbprint = await calculateJwkThumbprint(await exportJWK(key));
    for (const jwk of jwks.keys) {
      if (typeof jwk.kid !== 'string') continue;
      try {
        if ((await calculateJwkThumbprint(jwk)) === thumbprint) return jwk.kid;
      } catch {
        // A member jose cannot thumbprint cannot have verified the signature either.
      }
    }
  } catch {
    // The kid is for audit only; its absence must not fail an authentication that succeeded.
  }
  return undefined;
}

/**
 * Verifies a `private_key_jwt` client assertion (RFC 7523 §3 as tightened by
 * draft-ietf-oauth-rfc7523bis): signed with an asymmetric `alg` by a key of the client's
 * registered JWKS (never one named by `jwk`, `jku`, `x5u` or `x5c`); `iss` = `sub` = the
 * client; `aud` exactly the issuer identifier as a single string; `exp` present, in the
 * future and at most `maxLifetimeSeconds` ahead; `iat` not in the future; `nbf` honoured;
 * `jti` a non-empty string of at most 256 characters. Every failure is an
 * `invalid_client` whose `reason` says which rule failed.
 *
 * Replay is NOT checked here: the caller must consume the returned `jti` in its
 * {@link JtiStore} (or use `authenticateClientAssertion`, which does).
 */
export async function verifyClientAssertion(options: VerifyClientAssertionOptions): Promise<VerifiedClientAssertion> {
  const { assertion, clientId, issuer, jwks } = options;
  const now = options.now ?? new Date();
  const maxLifetime = options.maxLifetimeSeconds ?? DEFAULT_ASSERTION_MAX_LIFETIME_SECONDS;
  const tolerance = options.clockToleranceSeconds ?? DEFAULT_ASSERTION_CLOCK_TOLERANCE_SECONDS;
  const fail = (reason: ClientAuthFailureReason): InvalidClientError => clientAuthenticationFailed(reason);

  if (typeof assertion !== 'string' || assertion.length > MAX_ASSERTION_LENGTH || assertion.split('.').length !== 3) {
    throw fail('assertion_malformed');
  }
  if (!assertion.split('.').every((segment) => SEGMENT.test(segment))) throw fail('assertion_malformed');
  let header: JWSHeaderParameters;
  try {
    header = decodeProtectedHeader(assertion);
  } catch (cause) {
    throw clientAuthenticationFailed('assertion_malformed', cause);
  }
  if (!isClientAssertionSigningAlg(header.alg)) throw fail('assertion_alg');
  for (const name of FORBIDDEN_ASSERTION_HEADERS) {
    if (Object.hasOwn(header, name)) throw fail('assertion_header');
  }
  if (header.typ !== undefined && (typeof header.typ !== 'string' || !ACCEPTED_TYPS.has(normaliseTyp(header.typ)))) {
    throw fail('assertion_typ');
  }
  // No JWS extension is understood here (jose would accept only `b64`, which a JWT may not use).
  if (header.crit !== undefined) throw fail('assertion_malformed');

  let keySet: JWTVerifyGetKey;
  try {
    keySet = keySetFor(jwks);
  } catch (cause) {
    throw clientAuthenticationFailed('client_jwks_invalid', cause);
  }

  // The signature first, then jose's exp/nbf checks (with the tolerance); the rest is ours,
  // because jose accepts an `aud` array that merely contains the expected value.
  const { payload, key } = await verifySignatureAndTimes(assertion, header, header.alg, keySet, {
    algorithms: [...CLIENT_ASSERTION_SIGNING_ALGS],
    currentDate: now,
    clockTolerance: tolerance,
    onThreadPool: options.ecdsaOnThreadPool ?? true,
  });

  const nowSeconds = Math.floor(now.getTime() / 1000);
  if (payload.iss !== clientId) throw fail('assertion_issuer');
  if (payload.sub !== clientId) throw fail('assertion_subject');
  if (typeof payload.aud !== 'string' || payload.aud !== issuer) throw fail('assertion_audience');
  if (typeof payload.exp !== 'number' || payload.exp - nowSeconds > maxLifetime + tolerance) {
    throw fail('assertion_lifetime');
  }
  if (typeof payload.iat === 'number' && payload.iat > nowSeconds + tolerance) throw fail('assertion_iat');
  const { jti } = payload;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_ASSERTION_JTI_LENGTH || /[\u0000-\u001f\u007f]/.test(jti) || hasLoneSurrogate(jti))
    throw fail('assertion_jti');

  return {
    clientId,
    jti,
    expiresAt: new Date(payload.exp * 1000),
    alg: header.alg,
    kid: await kidOf(jwks, header, key),
  };
}
