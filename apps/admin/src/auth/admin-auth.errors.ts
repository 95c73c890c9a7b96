/** No usable admin token: `401 {error: 'unauthorized', message}` with `WWW-Authenticate: Bearer realm="writ"`. */
export class AdminUnauthorizedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdminUnauthorizedError';
  }
}

/** A valid admin token whose role is too low: `403 {error: 'forbidden', message}`. */
export class AdminForbiddenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdminForbiddenError';
  }
}

/** Too many failed admin-token uses from one address: `429 {error: 'too_many_requests', message}` with `Retry-After`. */
export class AdminThrottledError extends Error {
  constructor(
    readonly retryAfterSeconds: number,
    message?: string,
  ) {
    super(message ?? `too many failed admin authentications from this address; retry after ${retryAfterSeconds} s`);
    this.name = 'AdminThrottledError';
  }
}
