import { InvalidRequestError } from '@writ/oauth';

/** A gateway request target, checked and split. */
export interface RequestTarget {
  connectorId: string;
  /** The upstream path as it will be forwarded (raw, already proven normal), starting with `/`. */
  upstreamPath: string;
  /** Its segments, percent-decoded, for catalogue matching and path constraints. */
  segments: string[];
  /** The raw query string without `?` (forwarded as is), or `''`. */
  query: string;
}

const CONNECTOR_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// Escapes that could decode into a separator, a dot segment or another escape.
const DANGEROUS_ESCAPE = /%(2e|2f|5c|25|00)/i;
// Unreserved, sub-delims, ':' '@' and well-formed escapes (RFC 3986 pchar).
const PCHAR_SEGMENT = /^(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*$/;
const QUERY = /^(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*$/;

function isDotSegment(segment: string): boolean {
  return segment === '' || segment === '.' || segment === '..';
}

function refuse(description: string): never {
  throw new InvalidRequestError(description, { reason: 'target_not_normal' });
}

/**
 * Parses `/connectors/{id}/{upstream path}?{query}` from the raw request target. Refuses
 * what could make the check and the upstream see different paths: absolute-form targets,
 * backslashes, `.`/`..` and empty segments (also once a `;parameters` part is removed, as
 * servlet containers do: `..;/`), and escapes of `.`, `/`, `\`, `%` or NUL (so
 * neither single nor double encoding can smuggle a traversal), and `;` in the query (a
 * separator to some parsers, not to others). What passes is forwarded
 * byte for byte.
 */
export function parseRequestTarget(rawUrl: string): RequestTarget {
  if (!rawUrl.startsWith('/')) refuse('absolute-form request targets are not accepted');
  const hash = rawUrl.indexOf('#');
  if (hash >= 0) refuse('request target must not carry a fragment');
  const mark = rawUrl.indexOf('?');
  const path = mark >= 0 ? rawUrl.slice(0, mark) : rawUrl;
  const query = mark >= 0 ? rawUrl.slice(mark + 1) : '';
  if (path.includes('\\')) refuse('backslashes are not accepted in the path');
  if (DANGEROUS_ESCAPE.test(path)) refuse('encoded dots, slashes, backslashes and percent signs are not accepted in the path');
  if (!QUERY.test(query)) refuse('the query string is not well formed');
  // Rack 2, and Python and Go before 2021, also split parameters on `;`: `x=1;repo=evil` is a second `repo` to them.
  if (query.includes(';')) refuse('";" is not accepted in the query string (some upstreams split parameters on it)');
  const parts = path.split('/');
  // ['', 'connectors', id, ...upstream]
  if (parts[1] !== 'connectors' || parts.length < 3) refuse('expected /connectors/{id}/{path}');
  const connectorId = parts[2];
  if (!CONNECTOR_ID.test(connectorId)) refuse('the connector id is not valid');
  const upstream = parts.slice(3);
  const segments: string[] = [];
  for (const segment of upstream) {
    if (isDotSegment(segment)) refuse('empty, "." and ".." path segments are not accepted');
    // Tomcat, Jetty and Spring strip a segment's `;parameters` and then resolve dot segments: `..;x` is `..` to them.
    if (isDotSegment(segment.split(';')[0])) refuse('a segment that is empty, "." or ".." before its ";" parameters is not accepted');
    if (!PCHAR_SEGMENT.test(segment)) refuse('the path is not well formed');
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      refuse('the path is not well formed');
    }
    if (/[\u0000-\u001f\u007f]/.test(decoded)) refuse('control characters are not accepted in the path');
    segments.push(decoded);
  }
  return { connectorId, upstreamPath: '/' + upstream.join('/'), segments, query };
}
