import { OAuthError } from '@writ/oauth';

/** 413: the request body is larger than the gateway accepts. */
export class PayloadTooLargeError extends OAuthError {
  readonly error = 'invalid_request' as const;
  readonly status = 413;
  constructor(limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}

/** 415: a body the constraint engine cannot read, while a body constraint applies; `reason` (audited) says why. */
export class UnsupportedMediaTypeError extends OAuthError {
  readonly error = 'invalid_request' as const;
  readonly status = 415;
  constructor(description: string, reason: 'body_content_type' | 'body_content_encoding' | 'body_charset') {
    super(description, { reason });
  }
}

/** 502: the upstream could not be reached or answered unusably. Never retried for writes. */
export class BadGatewayError extends OAuthError {
  readonly error = 'bad_gateway' as const;
  readonly status = 502;
  constructor(description = 'the upstream API could not be reached', options: { reason?: string; cause?: unknown } = {}) {
    super(description, options);
  }
}

/** 504: the upstream did not answer within the gateway's timeout. */
export class GatewayTimeoutError extends OAuthError {
  readonly error = 'gateway_timeout' as const;
  readonly status = 504;
  constructor(description = 'the upstream API did not answer in time', options: { reason?: string; cause?: unknown } = {}) {
    super(description, options);
  }
}

/** 400: a constrained request value the gateway cannot check as the upstream will read it; `field` names it (`body.amount`). */
export class InvalidFieldError extends OAuthError {
  readonly error = 'invalid_request' as const;
  readonly status = 400;
  constructor(field: string, description: string, reason: string) {
    super(description, { reason, extra: { field } });
  }
}

/**
 * 403: the connector injects the task user's own upstream token, and there is none to inject:
 * the task has no verified user, the user has not connected, or the connection is broken.
 * Nothing was sent upstream; `reason` says which (`no_verified_user`, `no_connection`, `connection_broken`).
 */
export class ConnectionRequiredError extends OAuthError {
  readonly error = 'connection_required' as const;
  readonly status = 403;
  constructor(description: string, reason: string) {
    super(description, { reason });
  }
}
