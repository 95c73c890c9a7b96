/** Why a connected-account step was refused; `code` is stable and safe to show (never a secret). */
export class ConnectedAccountError extends Error {
  constructor(
    /** `no_verified_user`, `no_connection`, `connection_broken`, `link_invalid`, `not_authorization_code`, `upstream_unavailable`... */
    readonly code: string,
    message: string,
    /** HTTP status the transport should answer with. */
    readonly status: 400 | 401 | 403 | 404 | 503 = 403,
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
