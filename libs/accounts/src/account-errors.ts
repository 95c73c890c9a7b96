/** Why a connected-account step was refused; `code` is stable and safe to show (never a secret). */
export class ConnectedAccountError extends Error {
  constructor(
    /** `no_verified_user`, `no_connection`, `connection_broken`, `link_invalid`, `not_authorization_code`, `upstream_unavailable`... */
    readonly code: string,
    message: string,
    /** HTTP status the transport should answer with. */
    readonly status: 400 | 401 | 403 | 404 | 503 = 403,
    /** For a `503` that cannot succeed sooner: the seconds to wait (`Retry-After`). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'ConnectedAccountError';
  }
}

/** A user token that is not acceptable proof of a user (unknown issuer, bad signature, wrong `aud`, expired...). */
export class UserTokenError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'UserTokenError';
  }
}

/**
 * The keys of a trusted identity provider could not be had (its JWKS endpoint refused the
 * connection, timed out, or answered anything but a `200` JWK Set): the token in hand could not
 * be checked, which is not the caller's fault. Transports answer `503` with `Retry-After`.
 */
export class IdentityProviderUnavailableError extends Error {
  readonly code = 'jwks_unavailable';
  constructor(message = "the identity provider's keys could not be fetched", options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityProviderUnavailableError';
  }
}
