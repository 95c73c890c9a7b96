/**
 * Shortest lifetime believed for an upstream access token, whatever its `expires_in` says (0,
 * a few seconds): a token is reused at least this long, less the refresh margin, before it is
 * fetched or refreshed again. A provider answering `expires_in: 0` (misbehaving, or hostile)
 * would otherwise turn every gateway call into a token request, and for a user's connected
 * account into a refresh-token rotation written to the database. A token the upstream refuses
 * sooner is refreshed on its 401, at most once per {@link MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS}.
 */
export const MIN_UPSTREAM_TOKEN_SECONDS = 60;

/**
 * Longest lifetime believed (a day): a huge `expires_in` would make an invalid date (refused by
 * PostgreSQL) or keep a token for ever; a token refused earlier is refreshed on its 401.
 */
export const MAX_UPSTREAM_TOKEN_SECONDS = 24 * 3600;

/**
 * Fewest seconds between two token fetches (or refreshes) of one credential (or connected
 * account) asked for because the upstream refused a token with `401`: a token that was just
 * obtained and is refused already will not be cured by asking again at once, and an upstream
 * refusing every token would otherwise make each call a token request. Meanwhile such a call is
 * a `503` with `Retry-After`.
 */
export const MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS = 30;

/**
 * The lifetime Writ believes for an upstream access token from its `expires_in` (seconds, a
 * finite number at least 0): bounded by {@link MIN_UPSTREAM_TOKEN_SECONDS} below and
 * {@link MAX_UPSTREAM_TOKEN_SECONDS} above.
 */
export function believedTokenLifetime(expiresIn: number): number {
  return Math.min(Math.max(expiresIn, MIN_UPSTREAM_TOKEN_SECONDS), MAX_UPSTREAM_TOKEN_SECONDS);
}
