/**
 * `@writ/oauth`: framework-free OAuth building blocks shared by the Writ services:
 * RFC error classes, form parsing, `private_key_jwt` client assertions, RFC 9396
 * `authorization_details` subset logic and RFC 8693 token exchange parameters.
 */

// Errors
export {
  OAuthError,
  isOAuthError,
  type OAuthErrorBody,
  type OAuthErrorOptions,
  type WwwAuthenticateInfo,
  type WwwAuthenticateScheme,
} from './errors/oauth-error';
export {
  AccessDeniedError,
  AuthorizationPendingError,
  InsufficientScopeError,
  InvalidAuthorizationDetailsError,
  InvalidClientError,
  InvalidDpopProofError,
  InvalidGrantError,
  InvalidRequestError,
  InvalidScopeError,
  InvalidTargetError,
  InvalidTokenError,
  RetryLaterError,
  ServerError,
  TemporarilyUnavailableError,
  TooManyRequestsError,
  UnauthorizedClientError,
  UnsupportedGrantTypeError,
  UseDpopNonceError,
  type AuthorizationPendingOptions,
  type BasicErrorOptions,
  type DpopErrorOptions,
  type InsufficientScopeOptions,
  type InvalidTokenOptions,
  type OAuthErrorCode,
} from './errors/oauth-errors';
export { DEFAULT_REALM, buildWwwAuthenticate, wwwAuthenticateFor, type WwwAuthenticateChallenge } from './errors/www-authenticate';

// Form parameters
export { optionalParam, parseFormBody, requireParam, type FormParams, type ParseFormBodyOptions } from './params/parse-form-body';

// Client authentication (private_key_jwt)
export {
  CLIENT_ASSERTION_SIGNING_ALGS,
  CLIENT_ASSERTION_TYPE_JWT_BEARER,
  DEFAULT_ASSERTION_CLOCK_TOLERANCE_SECONDS,
  DEFAULT_ASSERTION_MAX_LIFETIME_SECONDS,
  FORBIDDEN_ASSERTION_HEADERS,
  MAX_ASSERTION_JTI_LENGTH,
  MAX_ASSERTION_LENGTH,
  isClientAssertionSigningAlg,
  type ClientAssertionSigningAlg,
} from './client-auth/client-assertion.constants';
export { authorizationHeaderRefused, clientAuthenticationFailed, type ClientAuthFailureReason } from './client-auth/client-auth-failure';
export { readClientAssertion, type ClaimedClientAssertion } from './client-auth/read-client-assertion';
export { verifyClientAssertion, type VerifiedClientAssertion, type VerifyClientAssertionOptions } from './client-auth/verify-client-assertion';
export type { JtiStore } from './client-auth/jti-store.interface';
export { authenticateClientAssertion, type AuthenticateClientAssertionOptions } from './client-auth/authenticate-client-assertion';
export { validateClientJwks, type PublicJwk, type PublicJwks, type ValidateClientJwksOptions } from './client-auth/validate-client-jwks';
export { JwksValidationError, type JwksFieldError } from './client-auth/jwks-validation.error';

// authorization_details (RFC 9396)
export {
  CONNECTOR_DETAIL_TYPE,
  CONNECTOR_ID_PATTERN,
  CONSTRAINT_OPERATORS,
  type ConnectorAuthorizationDetail,
  type ConstraintOperator,
  type ConstraintOperatorLookup,
  type ConstraintValue,
} from './authorization-details/authorization-details.types';
export {
  type AuthorizationDetailsProblem,
  checkAuthorizationDetails,
  type CheckAuthorizationDetailsOptions,
  parseAuthorizationDetails,
  type ParseAuthorizationDetailsOptions,
} from './authorization-details/parse-authorization-details';
export { checkWithinAllowed, isConstraintWithin, isValidConstraintValue, type WithinAllowedResult } from './authorization-details/check-within-allowed';
export { jsonValuesEqual, matchConstraint, parseDecimalString } from './authorization-details/match-constraint';

// Token exchange (RFC 8693)
export { ACCESS_TOKEN_TYP, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT } from './token-exchange/token-exchange.constants';
export { connectorResourceUrl, foreignLocations } from './token-exchange/connector-resource-url';
export {
  exchangeTargetRefusal,
  parseTokenExchangeRequest,
  type ParseTokenExchangeOptions,
  type TokenExchangeRequest,
} from './token-exchange/parse-token-exchange-request';
export { quoteToken, safeToken } from './util/safe-description';

// DPoP (RFC 9449)
export { DPOP_PROOF_TYP, DPOP_SIGNING_ALGS, verifyDpopProof, type DpopProofExpectation, type VerifiedDpopProof } from './dpop/verify-dpop-proof';

// Caller JSON: duplicate and forbidden keys, lone surrogates, depth
export {
  DEFAULT_MAX_JSON_DEPTH,
  FORBIDDEN_JSON_KEYS,
  OBJECT_PROTOTYPE_JSON_KEYS,
  findJsonInputProblem,
  hasLoneSurrogate,
  JsonInputError,
  jsonPath,
  parseJsonInput,
  replaceLoneSurrogates,
  type JsonInputOptions,
  type JsonInputProblem,
} from './json/json-input';
export { canonicalDecimal, numberTextIsExact } from './json/exact-decimal';
