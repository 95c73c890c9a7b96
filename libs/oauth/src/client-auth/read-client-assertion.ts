import { decodeJwt } from 'jose';
import type { FormParams } from '../params/parse-form-body';
import { CLIENT_ASSERTION_TYPE_JWT_BEARER, MAX_ASSERTION_LENGTH } from './client-assertion.constants';
import { clientAuthenticationFailed } from './client-auth-failure';

/** The client a request claims to be, read from its (not yet verified) client assertion. */
export interface ClaimedClientAssertion {
  /** The assertion's `iss` (= `sub`, = `client_id` when sent): whose JWKS to verify against. */
  readonly clientId: string;
  /** The compact JWS, to pass to `verifyClientAssertion`. */
  readonly assertion: string;
}

/** Parameters of other client authentication methods (RFC 6749 §2.3.1, RFC 8705). */
const OTHER_METHOD_PARAMS = ['client_secret'] as const;

/**
 * Reads the `private_key_jwt` client authentication of a token, introspection or
 * revocation request (RFC 7523 §2.2) and returns the client it claims to be, decoding
 * the assertion WITHOUT verifying it: the caller then loads that client's JWKS and calls
 * `verifyClientAssertion`. Any problem, or any other authentication method, is an
 * `invalid_client` with a generic description. (An `Authorization: Basic` header is the
 * HTTP layer's to refuse with `authorizationHeaderRefused(header)`.)
 */
export function readClientAssertion(params: FormParams): ClaimedClientAssertion {
  for (const name of OTHER_METHOD_PARAMS) {
    if (params.has(name)) throw clientAuthenticationFailed('client_secret_unsupported');
  }
  const type = params.get('client_assertion_type');
  const assertion = params.get('client_assertion');
  if (type === undefined && assertion === undefined) throw clientAuthenticationFailed('client_auth_missing');
  if (type !== CLIENT_ASSERTION_TYPE_JWT_BEARER) throw clientAuthenticationFailed('assertion_type');
  if (assertion === undefined) throw clientAuthenticationFailed('assertion_missing');
  if (assertion.length > MAX_ASSERTION_LENGTH || assertion.split('.').length !== 3) {
    throw clientAuthenticationFailed('assertion_malformed');
  }

  let claims: Record<string, unknown>;
  try {
    claims = decodeJwt(assertion);
  } catch (cause) {
    throw clientAuthenticationFailed('assertion_malformed', cause);
  }
  const { iss, sub } = claims;
  if (typeof iss !== 'string' || iss === '') throw clientAuthenticationFailed('assertion_issuer');
  if (sub !== iss) throw clientAuthenticationFailed('assertion_subject');
  const clientIdParam = params.get('client_id');
  if (clientIdParam !== undefined && clientIdParam !== iss) {
    throw clientAuthenticationFailed('assertion_client_id_mismatch');
  }
  return { clientId: iss, assertion };
}
