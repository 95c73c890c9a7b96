import { WritResponseError } from './errors.js';

/** The lifetime assumed when a token answer names none (`expires_in` is optional, RFC 6749 §5.1). */
export const DEFAULT_LIFETIME_SECONDS = 60;
/**
 * The longest lifetime believed from a token answer: a day. Writ's credentials live minutes; a
 * larger `expires_in` (a bug, a proxy, `1e300`) would otherwise keep a token cached for ever.
 */
export const MAX_LIFETIME_SECONDS = 86_400;
/** Tokens that live less than this are used for the call that asked for them and never cached. */
export const MIN_CACHED_LIFETIME_MS = 1000;

/**
 * How long a token answer's token may be used, in milliseconds: `expires_in` when it is a
 * number of seconds (a numeric string is read as oauth4webapi reads it), 60 s when absent,
 * at most a day. Negative, non-finite or non-numeric values are a {@link WritResponseError}
 * that never carries the token.
 */
export function lifetimeMs(expiresIn: unknown): number {
  if (expiresIn === undefined || expiresIn === null) return DEFAULT_LIFETIME_SECONDS * 1000;
  const seconds = typeof expiresIn === 'number' ? expiresIn : typeof expiresIn === 'string' ? Number.parseFloat(expiresIn) : Number.NaN;
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new WritResponseError(200, "the token response's expires_in is not a number of seconds");
  }
  return Math.min(seconds, MAX_LIFETIME_SECONDS) * 1000;
}

/**
 * When a token obtained at `obtainedAt` (epoch ms) for `lifetime` ms stops being reused: a fifth
 * of its lifetime early, at least 1 s and at most 30 s. A token shorter-lived than 1 s (an
 * `expires_in` of 0) is never reused (`-Infinity`): each call gets its own, once.
 */
export function refreshAtFor(obtainedAt: number, lifetime: number): number {
  if (lifetime < MIN_CACHED_LIFETIME_MS) return Number.NEGATIVE_INFINITY;
  return obtainedAt + lifetime - Math.max(1000, Math.min(30_000, lifetime / 5));
}
