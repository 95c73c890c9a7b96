import { ConnectedAccountError, IdentityProviderUnavailableError, UserTokenError } from '@writ/accounts';
import { OAuthError } from '@writ/oauth';

/** A connected-accounts refusal in the RFC 6749 error shape: `error` is the stable code, the status its own. */
export class ConnectionRefusedError extends OAuthError {
  readonly error: string;
  readonly status: number;
  constructor(error: string, status: number, description: string, bearerChallenge = false) {
    super(description, { reason: error, ...(bearerChallenge ? { wwwAuthenticate: { scheme: 'Bearer' as const } } : {}) });
    this.error = error;
    this.status = status;
  }
}

/** Maps the library's errors to responses; anything else is rethrown as it is. */
export function connectionFailure(error: unknown): unknown {
  if (error instanceof ConnectedAccountError) {
    return new ConnectionRefusedError(error.status === 503 ? 'temporarily_unavailable' : error.code, error.status, error.message);
  }
  if (error instanceof IdentityProviderUnavailableError) return new ConnectionRefusedError('temporarily_unavailable', 503, `${error.message}; retry later`);
  if (error instanceof UserTokenError) return new ConnectionRefusedError('invalid_token', 401, `the user token is not acceptable: ${error.message}`, true);
  return error;
}
