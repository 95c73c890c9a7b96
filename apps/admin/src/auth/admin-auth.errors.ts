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
