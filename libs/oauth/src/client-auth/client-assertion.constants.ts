/** RFC 7523 §2.2 `client_assertion_type` for a JWT client assertion (`private_key_jwt`). */
export const CLIENT_ASSERTION_TYPE_JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

/**
 * The only client assertion signing algorithms accepted: asymmetric ones. `none` and
 * HMAC are refused (there are no client secrets). Also the discovery value of
 * `token_endpoint_auth_signing_alg_values_supported`. `Ed25519` is the fully-specified name of
 * EdDSA over Ed25519 (RFC 9864), which oauth4webapi and other current clients put in what they
 * sign with an Ed25519 key (DPoP proofs accept it too).
 */
export const CLIENT_ASSERTION_SIGNING_ALGS = Object.freeze([
  'ES256',
  'ES384',
  'ES512',
  'PS256',
  'PS384',
  'PS512',
  'RS256',
  'RS384',
  'RS512',
  'EdDSA',
  'Ed25519',
] as const);

/** One of {@link CLIENT_ASSERTION_SIGNING_ALGS}. */
export type ClientAssertionSigningAlg = (typeof CLIENT_ASSERTION_SIGNING_ALGS)[number];

/** True when `alg` is one of {@link CLIENT_ASSERTION_SIGNING_ALGS}. */
export function isClientAssertionSigningAlg(alg: unknown): alg is ClientAssertionSigningAlg {
  return typeof alg === 'string' && (CLIENT_ASSERTION_SIGNING_ALGS as readonly string[]).includes(alg);
}

/**
 * JOSE headers that would let the assertion name its own verification key. Keys come
 * only from the client's registered JWKS, so these are refused outright.
 */
export const FORBIDDEN_ASSERTION_HEADERS = Object.freeze(['jwk', 'jku', 'x5u', 'x5c'] as const);

/** Default and bound of an assertion's remaining lifetime (`exp - now`): 5 minutes. */
export const DEFAULT_ASSERTION_MAX_LIFETIME_SECONDS = 300;

/** Default clock skew tolerated on `exp`, `nbf` and `iat`. */
export const DEFAULT_ASSERTION_CLOCK_TOLERANCE_SECONDS = 30;

/** Bound of a `jti` value's length. */
export const MAX_ASSERTION_JTI_LENGTH = 256;

/** Bound of a compact client assertion's length; larger inputs are refused before decoding. */
export const MAX_ASSERTION_LENGTH = 8192;
