import { InvalidClientError } from '../errors/oauth-errors';

/**
 * Stable reasons a client authentication fails, recorded in audit events. The client only
 * sees the matching fixed description, never the assertion or a claim value.
 */
export type ClientAuthFailureReason =
  | 'client_auth_missing'
  | 'client_auth_unsupported'
  | 'client_secret_unsupported'
  | 'assertion_type'
  | 'assertion_missing'
  | 'assertion_malformed'
  | 'assertion_client_id_mismatch'
  | 'assertion_alg'
  | 'assertion_header'
  | 'assertion_typ'
  | 'assertion_key'
  | 'assertion_signature'
  | 'assertion_issuer'
  | 'assertion_subject'
  | 'assertion_audience'
  | 'assertion_expired'
  | 'assertion_lifetime'
  | 'assertion_not_yet_valid'
  | 'assertion_iat'
  | 'assertion_jti'
  | 'assertion_replay'
  | 'client_unknown'
  | 'client_inactive'
  | 'client_jwks_invalid';

const DESCRIPTIONS: Readonly<Record<ClientAuthFailureReason, string>> = {
  client_auth_missing: 'client authentication is required (private_key_jwt)',
  client_auth_unsupported: 'only private_key_jwt client authentication is supported',
  client_secret_unsupported: 'client secrets are not supported',
  assertion_type: 'client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
  assertion_missing: 'client_assertion is required',
  assertion_malformed: 'client assertion is malformed',
  assertion_client_id_mismatch: 'client_id does not match the client assertion',
  assertion_alg: 'client assertion alg is not allowed',
  assertion_header: 'client assertion headers jwk, jku, x5u and x5c are not accepted',
  assertion_typ: 'client assertion typ is not accepted',
  assertion_key: 'no registered key of the client matches the client assertion',
  assertion_signature: 'client assertion signature is invalid',
  assertion_issuer: 'client assertion iss must be the client identifier',
  assertion_subject: 'client assertion sub must equal iss',
  assertion_audience: 'client assertion audience must be the issuer identifier',
  assertion_expired: 'client assertion has expired',
  assertion_lifetime: 'client assertion exp is missing or too far in the future',
  assertion_not_yet_valid: 'client assertion is not yet valid',
  assertion_iat: 'client assertion iat is in the future',
  assertion_jti: 'client assertion jti must be a non-empty string of at most 256 characters',
  assertion_replay: 'client assertion has already been used',
  // Unknown, suspended and misconfigured clients look the same from outside.
  client_unknown: 'client authentication failed',
  client_inactive: 'client authentication failed',
  client_jwks_invalid: 'client authentication failed',
};

/**
 * The `invalid_client` for a request that tried to authenticate with an `Authorization` header
 * (Writ takes `private_key_jwt` only): RFC 6749 §5.2 requires a 401 with a `WWW-Authenticate`
 * challenge matching the scheme the client used (`Bearer` and `DPoP` as such, any other as `Basic`,
 * the scheme RFC 6749 §2.3.1 defines for clients).
 */
export function authorizationHeaderRefused(header: string): InvalidClientError {
  const scheme = /^\s*([^\s]+)/.exec(header)?.[1].toLowerCase();
  const challenge = scheme === 'bearer' ? 'Bearer' : scheme === 'dpop' ? 'DPoP' : 'Basic';
  return new InvalidClientError(DESCRIPTIONS.client_auth_unsupported, { reason: 'client_auth_unsupported', wwwAuthenticate: { scheme: challenge } });
}

/** An `invalid_client` error for `reason`, with its fixed, secret-free description. */
export function clientAuthenticationFailed(reason: ClientAuthFailureReason, cause?: unknown): InvalidClientError {
  return new InvalidClientError(DESCRIPTIONS[reason], { reason, cause });
}
