/** A UUID in its canonical text form (what PostgreSQL's `uuid` type reads without error). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** An instant as Writ writes it (`Date.toISOString()`, or with fewer fraction digits). */
const ISO_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z$/;
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// C0 controls (NUL included) and DEL: never part of an identifier, a cursor or a filter.
const CONTROL = /[\u0000-\u001f\u007f]/;

/** True for a canonical UUID string: check before a value reaches a `::uuid` cast or a uuid column. */
export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

/**
 * True for an ISO 8601 UTC instant (`2025-01-31T12:00:00.000Z`) that is a real date.
 * `Date.parse` alone accepts almost anything (`"x 1"`), which then fails a `::timestamptz` cast.
 */
export function isIsoInstant(value: unknown): value is string {
  if (typeof value !== 'string' || !ISO_INSTANT.test(value)) return false;
  const at = Date.parse(value);
  // Date.parse rolls an impossible date over (February 30 reads as March 2, 24:00 as the next
  // day) and reads year 0, which PostgreSQL refuses: the date must be the one written, from year 1.
  return !Number.isNaN(at) && !value.startsWith('0000') && new Date(at).toISOString().slice(0, 19) === value.slice(0, 19);
}

/**
 * Why a route parameter or query value cannot be used as text, or `undefined`: control
 * characters (NUL cannot be stored or compared by PostgreSQL) and lone UTF-16 surrogates (not
 * Unicode) are refused before they reach a query.
 */
export function requestTextProblem(value: string): string | undefined {
  if (CONTROL.test(value)) return 'must not contain control characters';
  if (LONE_SURROGATE.test(value)) return 'must be valid Unicode text';
  return undefined;
}

/**
 * The request's path as Express reads it (`req.path`), or the raw target before any `?` when
 * Express cannot parse it (`GET http://[x/...`: its getter throws `Invalid URL`). For logs, the
 * gate and spans: never a reason to fail while answering.
 */
export function requestPath(req: { path: string; url?: string }): string {
  try {
    return req.path;
  } catch {
    return (req.url ?? '').split('?')[0];
  }
}

/**
 * The `charset` parameter of a `Content-Type` header, lower-cased and unquoted; `undefined`
 * when there is none. A header naming several (`charset=utf-8; charset=utf-16`) gives them all,
 * comma-separated, so that it never passes as one of them: parsers disagree on which one wins.
 */
export function contentTypeCharset(contentType: string | undefined): string | undefined {
  // Most requests name no charset: one case-insensitive scan instead of the parameter parse.
  if (!contentType || !/charset/i.test(contentType)) return undefined;
  const found = [...contentType.matchAll(/;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/gi)].map((match) => (match[1] ?? match[2]).toLowerCase());
  return found.length === 0 ? undefined : found.join(', ');
}

/** True when a body with this `Content-Type` is UTF-8: no charset parameter, or exactly one that says `utf-8`. */
export function declaresUtf8(contentType: string | undefined): boolean {
  const charset = contentTypeCharset(contentType);
  return charset === undefined || charset === 'utf-8' || charset === 'utf8';
}

/** `/connect/{link}`: a connect link is a one-time bearer capability (whoever opens it picks the account). */
const CAPABILITY_PATH = /^(\/connect\/)(?!callback(?:\/|$))[^/]+/i;

/** Longest path a log line or span keeps (Node's header limit bounds it already, to 16 KB). */
const LOGGED_PATH_LENGTH = 1024;

/**
 * A request path fit for a log line or a span: a capability carried in the path (a connect
 * link) is replaced by `[redacted]`, and the path is cut at {@link LOGGED_PATH_LENGTH}.
 */
export function loggablePath(path: string): string {
  const redacted = path.replace(CAPABILITY_PATH, '$1[redacted]');
  return redacted.length > LOGGED_PATH_LENGTH ? `${redacted.slice(0, LOGGED_PATH_LENGTH)}…` : redacted;
}
