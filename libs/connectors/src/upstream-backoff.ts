/**
 * Backoff of an upstream token endpoint after transient failures (unreachable, timing out,
 * answering `5xx` or `429`): the first pause, doubling with each failure in a row up to the
 * longest, each shortened by a random part of up to {@link UPSTREAM_BACKOFF_JITTER} of it, so
 * that the callers of one provider that failed together are not all retried together. Used by
 * a connected account's refresh (per connection, across instances) and by a client-credentials
 * token fetch (per connector, per instance).
 */
export const UPSTREAM_BACKOFF_FIRST_SECONDS = 5;
/** Longest backoff between two attempts (5 min). */
export const UPSTREAM_BACKOFF_MAX_SECONDS = 300;
/** Largest part of a backoff taken off at random. */
export const UPSTREAM_BACKOFF_JITTER = 0.25;
/**
 * Failures in a row from which the backoff is {@link UPSTREAM_BACKOFF_MAX_SECONDS} (before its
 * jitter): {@link upstreamBackoffSchedule} has this many entries, the last one standing for
 * every later failure.
 */
export const UPSTREAM_BACKOFF_STEPS = 1 + Math.ceil(Math.log2(UPSTREAM_BACKOFF_MAX_SECONDS / UPSTREAM_BACKOFF_FIRST_SECONDS));

/**
 * The seconds (not rounded) before an upstream token endpoint is asked again after `failures`
 * transient failures in a row (1 for the first): {@link UPSTREAM_BACKOFF_FIRST_SECONDS}
 * doubled per failure after the first, at most {@link UPSTREAM_BACKOFF_MAX_SECONDS}, less
 * `random` (in [0, 1)) times {@link UPSTREAM_BACKOFF_JITTER} of it. Pure: the caller draws
 * `random`.
 */
export function upstreamBackoffSeconds(failures: number, random: number): number {
  const doublings = Math.min(Math.max(Math.floor(failures), 1), UPSTREAM_BACKOFF_STEPS) - 1;
  const jitter = Math.min(Math.max(random, 0), 1);
  return Math.min(UPSTREAM_BACKOFF_MAX_SECONDS, UPSTREAM_BACKOFF_FIRST_SECONDS * 2 ** doublings) * (1 - UPSTREAM_BACKOFF_JITTER * jitter);
}

/**
 * {@link upstreamBackoffSeconds} for the 1st, 2nd… {@link UPSTREAM_BACKOFF_STEPS}th failure in a
 * row with one `random` draw: for a statement that picks the entry of the failure count it
 * reads atomically (the last entry for any later failure).
 */
export function upstreamBackoffSchedule(random: number): number[] {
  return Array.from({ length: UPSTREAM_BACKOFF_STEPS }, (_, index) => upstreamBackoffSeconds(index + 1, random));
}
