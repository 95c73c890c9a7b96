import { OAuthError, type OAuthErrorOptions, type WwwAuthenticateScheme } from './oauth-error';

/** Every error code this library can produce. */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'invalid_authorization_details'
  | 'authorization_pending'
  | 'access_denied'
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  | 'server_error'
  | 'temporarily_unavailable'
  | 'invalid_token'
  | 'insufficient_scope';

/** Options of errors that only carry the common fields. */
export type BasicErrorOptions = Pick<OAuthErrorOptions, 'reason' | 'cause'>;

/**
 * The base of an error that carries only the common fields: its code, its status and the
 * description it falls back to. Each RFC error code stays a class of its own (`instanceof`,
 * `name`), declared in one line below.
 */
function basicError<C extends OAuthErrorCode, S extends number>(error: C, status: S, fallback: string) {
  return class extends OAuthError {
    readonly error: C = error;
    readonly status: S = status;
    constructor(description = fallback, options?: BasicErrorOptions) {
      super(description, options);
    }
  };
}

/** RFC 6749 §5.2 `invalid_request` (400): a missing, repeated, or malformed parameter. */
export class InvalidRequestError extends basicError('invalid_request', 400, 'the request is malformed') {}

/**
 * RFC 6749 §5.2 `invalid_client` (401): client authentication failed. `reason` says why,
 * for audit (see `ClientAuthFailureReason`); the description stays generic.
 */
export class InvalidClientError extends basicError('invalid_client', 401, 'client authentication failed') {
  /** `wwwAuthenticate`: the challenge for a client that authenticated with an `Authorization` header (RFC 6749 §5.2). */
  constructor(description?: string, options?: BasicErrorOptions & Pick<OAuthErrorOptions, 'wwwAuthenticate'>) {
    super(description, options);
  }
}

/** RFC 6749 §5.2 `invalid_grant` (400): the grant or subject token is invalid, expired or revoked. */
export class InvalidGrantError extends basicError('invalid_grant', 400, 'the grant is invalid') {}

/** RFC 6749 §5.2 `unauthorized_client` (400): this client may not use this grant type. */
export class UnauthorizedClientError extends basicError('unauthorized_client', 400, 'the client is not authorized to use this grant type') {}

/** RFC 6749 §5.2 `unsupported_grant_type` (400). */
export class UnsupportedGrantTypeError extends basicError('unsupported_grant_type', 400, 'unsupported grant_type') {}

/** RFC 6749 §5.2 `invalid_scope` (400): the scope is invalid, unknown, or not allowed here. */
export class InvalidScopeError extends basicError('invalid_scope', 400, 'the requested scope is invalid') {}

/** RFC 8693 §2.2.2 `invalid_target` (400): the `resource` or `audience` is unacceptable. */
export class InvalidTargetError extends basicError('invalid_target', 400, 'the requested resource is invalid') {}

/**
 * RFC 9396 §5 `invalid_authorization_details` (400): malformed `authorization_details`, or
 * a request the policy refuses (the description then carries the policy's reasons).
 */
export class InvalidAuthorizationDetailsError extends basicError('invalid_authorization_details', 400, 'the authorization_details are invalid') {}

/** Options of {@link AuthorizationPendingError}. */
export interface AuthorizationPendingOptions extends BasicErrorOptions {
  /** Identifier of the pending approval, for the client to poll or show. */
  readonly approvalId: string;
  /** Minimum seconds between two polls (RFC 8628 §3.5 style). */
  readonly interval: number;
}

/** `authorization_pending` (400, RFC 8628 §3.5 style): the request awaits a human approval. */
export class AuthorizationPendingError extends OAuthError {
  readonly error = 'authorization_pending' as const;
  readonly status = 400;
  /** Identifier of the pending approval. */
  readonly approvalId: string;
  /** Minimum seconds between two polls. */
  readonly interval: number;
  constructor(description: string, options: AuthorizationPendingOptions) {
    super(description, {
      reason: options.reason,
      cause: options.cause,
      extra: { approval_id: options.approvalId, interval: options.interval },
    });
    this.approvalId = options.approvalId;
    this.interval = options.interval;
  }
}

/** `access_denied` (400): the request was refused, e.g. an approval was declined. */
export class AccessDeniedError extends basicError('access_denied', 400, 'the request was denied') {}

/** Options of the DPoP errors, which answer differently at the token endpoint and at a resource server. */
export interface DpopErrorOptions extends BasicErrorOptions {
  /**
   * `true` at a resource server (the gateway): status 401 with a `DPoP` challenge
   * (RFC 9449 §7.1). Default: the token endpoint's 400 without a challenge.
   */
  readonly resourceServer?: boolean;
  /** DPoP proof algorithms the server accepts, for the challenge's `algs`. */
  readonly algs?: readonly string[];
}

function dpopErrorOptions(options: DpopErrorOptions): OAuthErrorOptions {
  return {
    reason: options.reason,
    cause: options.cause,
    wwwAuthenticate: options.resourceServer ? { scheme: 'DPoP', algs: options.algs } : undefined,
  };
}

/** RFC 9449 §5 `invalid_dpop_proof`: 400 at the token endpoint, 401 with a challenge at a resource server. */
export class InvalidDpopProofError extends OAuthError {
  readonly error = 'invalid_dpop_proof' as const;
  readonly status: 400 | 401;
  constructor(description = 'the DPoP proof is invalid', options: DpopErrorOptions = {}) {
    super(description, dpopErrorOptions(options));
    this.status = options.resourceServer ? 401 : 400;
  }
}

/**
 * RFC 9449 §8 `use_dpop_nonce`: 400 at the token endpoint, 401 at a resource server. The
 * server also sends the fresh nonce in the `DPoP-Nonce` header.
 */
export class UseDpopNonceError extends OAuthError {
  readonly error = 'use_dpop_nonce' as const;
  readonly status: 400 | 401;
  constructor(description = 'a DPoP nonce is required', options: DpopErrorOptions = {}) {
    super(description, dpopErrorOptions(options));
    this.status = options.resourceServer ? 401 : 400;
  }
}

/** RFC 6749 §5.2 `server_error` (500): never carries the internal error's message. */
export class ServerError extends basicError('server_error', 500, 'the server encountered an unexpected error') {}

/** RFC 6749 §5.2 `temporarily_unavailable` (503): e.g. the database or the policy is unavailable. */
export class TemporarilyUnavailableError extends basicError('temporarily_unavailable', 503, 'the service is temporarily unavailable') {}

/**
 * `temporarily_unavailable` (503) with its own `Retry-After`: the request cannot succeed before
 * then (e.g. the upstream refused a token obtained moments ago, which is not fetched again
 * before {@link retryAfterSeconds}).
 */
export class RetryLaterError extends TemporarilyUnavailableError {
  constructor(
    readonly retryAfterSeconds: number,
    description?: string,
    options?: BasicErrorOptions,
  ) {
    super(description, options);
  }
}

/**
 * `429` with `Retry-After`, in the RFC 6749 §5.2 shape (`temporarily_unavailable`: the server
 * will not handle requests from this caller for a while): too many failed authentications from
 * one address or for one client id.
 */
export class TooManyRequestsError extends OAuthError {
  readonly error = 'temporarily_unavailable' as const;
  readonly status = 429;
  constructor(
    readonly retryAfterSeconds: number,
    description = 'too many failed attempts; retry later',
    options?: BasicErrorOptions,
  ) {
    super(`${description} (retry after ${retryAfterSeconds} s)`, options);
  }
}

/** Options of {@link InvalidTokenError}. */
export interface InvalidTokenOptions extends BasicErrorOptions {
  /** The scheme the token was presented with; default `Bearer`. */
  readonly scheme?: WwwAuthenticateScheme;
  /** For the `DPoP` scheme: the accepted proof algorithms. */
  readonly algs?: readonly string[];
}

/** RFC 6750 §3.1 `invalid_token` (401): expired, revoked, malformed or foreign access token. */
export class InvalidTokenError extends OAuthError {
  readonly error = 'invalid_token' as const;
  readonly status = 401;
  constructor(description = 'the access token is invalid', options: InvalidTokenOptions = {}) {
    super(description, {
      reason: options.reason,
      cause: options.cause,
      wwwAuthenticate: { scheme: options.scheme ?? 'Bearer', algs: options.algs },
    });
  }
}

/** Options of {@link InsufficientScopeError}. */
export interface InsufficientScopeOptions extends BasicErrorOptions {
  /** The rule the request failed, sent as the `rule` member (e.g. `constraint:amount_max`). */
  readonly rule: string;
  /** The scheme the token was presented with; default `Bearer`. */
  readonly scheme?: WwwAuthenticateScheme;
  /** RFC 6750 §3 `scope` attribute of the challenge, when meaningful. */
  readonly scope?: string;
  /** For the `DPoP` scheme: the accepted proof algorithms. */
  readonly algs?: readonly string[];
}

/** RFC 6750 §3.1 `insufficient_scope` (403): the request is outside what the token grants. */
export class InsufficientScopeError extends OAuthError {
  readonly error = 'insufficient_scope' as const;
  readonly status = 403;
  /** The failed rule. */
  readonly rule: string;
  constructor(description: string, options: InsufficientScopeOptions) {
    super(description, {
      reason: options.reason,
      cause: options.cause,
      extra: { rule: options.rule },
      wwwAuthenticate: { scheme: options.scheme ?? 'Bearer', scope: options.scope, algs: options.algs },
    });
    this.rule = options.rule;
  }
}
