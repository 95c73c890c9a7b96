/** One problem of a submitted JWKS, with the path of the offending member (e.g. `jwks.keys[0].d`). */
export interface JwksFieldError {
  readonly field: string;
  readonly message: string;
}

/**
 * A client JWKS refused at registration; `errors` lists every problem found, for the
 * admin API's `400` with the offending fields. Not an OAuth protocol error.
 */
export class JwksValidationError extends Error {
  /** Stable code, jose style. */
  readonly code = 'ERR_JWKS_VALIDATION' as const;
  readonly errors: readonly JwksFieldError[];
  constructor(errors: readonly JwksFieldError[]) {
    super(`invalid JWKS: ${errors.map((e) => `${e.field} ${e.message}`).join('; ')}`);
    this.name = 'JwksValidationError';
    this.errors = Object.freeze([...errors]);
  }
}
