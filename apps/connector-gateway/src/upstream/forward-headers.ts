import type { IncomingHttpHeaders } from 'node:http';
import type { ConnectorOperation } from '@writ/database';
import { DROPPED_REQUEST_HEADERS, HOP_BY_HOP_HEADERS, isRoutingHeader, METHOD_OVERRIDE_HEADERS, SAFE_REQUEST_HEADERS } from '@writ/connectors';

/** Request headers that never reach the upstream: the agent's credentials, framing, routing and overrides. */
const DROPPED_REQUEST = DROPPED_REQUEST_HEADERS;

/**
 * Request headers dropped when a credential is injected: a byte range could cut an echo of the
 * credential so that no whole form of it is in the reply, and the redactor only recognises
 * whole ones. Without them the upstream sends the whole representation (`200`), as RFC 9110
 * section 14.2 lets any server do with a `Range` it does not honour.
 */
const DROPPED_WITH_CREDENTIAL = new Set(['range', 'if-range', 'request-range']);

/** Response headers never passed back to the agent. */
const DROPPED_RESPONSE = new Set([...HOP_BY_HOP_HEADERS, 'set-cookie', 'set-cookie2', 'www-authenticate']);

export { METHOD_OVERRIDE_HEADERS };

/**
 * A (lower-case) header name as Rack, CGI and WSGI servers read it: they map `-` and `_` both
 * to `_` (`HTTP_X_FORWARDED_FOR`), so `x_forwarded_for` is `x-forwarded-for` to them. Every
 * drop or refusal decision is taken on this form.
 */
export function dashedHeaderName(name: string): string {
  return name.replace(/_/g, '-');
}

/** True for a method-override header, in either spelling (`x-http-method-override`, `x_http_method_override`). */
export function isMethodOverrideHeader(name: string): boolean {
  return (METHOD_OVERRIDE_HEADERS as readonly string[]).includes(dashedHeaderName(name.toLowerCase()));
}

/**
 * Request headers the gateway reads to check a call and forwards as it read them: how the body
 * is typed and encoded, and the MCP session it belongs to. The upstream must get exactly these.
 */
const CHECKED_REQUEST_HEADERS: ReadonlySet<string> = new Set(['content-type', 'content-encoding', 'mcp-session-id']);

/**
 * Why the headers of a request cannot reach the upstream as the gateway checked them, if they
 * cannot: a `Connection` header naming one of {@link CHECKED_REQUEST_HEADERS} (a proxy drops
 * what `Connection` names, so a JSON body checked as JSON would arrive without its type, and
 * Rack and Rails read a `POST` without one as a form: `{"memo":"&amount=9"}` is `amount=9` to
 * them), or one of them spelled with `_` (`Content_Type`: Puma and Unicorn read it as
 * `CONTENT_TYPE` too, Rack and CGI servers read `mcp_session_id` as `Mcp-Session-Id`).
 */
export function uncheckedHeaderProblem(incoming: IncomingHttpHeaders): { description: string; reason: string } | undefined {
  for (const name of connectionListed(incoming)) {
    if (CHECKED_REQUEST_HEADERS.has(name)) {
      return { description: `the Connection header must not name ${name}: the upstream gets it as the gateway checked it`, reason: 'connection_header' };
    }
  }
  for (const name of Object.keys(incoming)) {
    if (name.includes('_') && CHECKED_REQUEST_HEADERS.has(dashedHeaderName(name))) {
      return { description: `the ${name} header is not accepted (some upstreams read it as ${dashedHeaderName(name)})`, reason: 'header_spelling' };
    }
  }
  return undefined;
}

const NONE_LISTED: ReadonlySet<string> = new Set();

function connectionListed(headers: IncomingHttpHeaders | Record<string, unknown>): ReadonlySet<string> {
  const value = headers.connection;
  if (value === undefined) return NONE_LISTED;
  const text = Array.isArray(value) ? value.join(',') : typeof value === 'string' ? value : '';
  return new Set(
    text
      .split(',')
      .map((name) => dashedHeaderName(name.trim().toLowerCase()))
      .filter(Boolean),
  );
}

/**
 * The headers sent upstream: the agent's, minus its credentials, cookies, hop-by-hop,
 * routing and client-IP headers (`Forwarded`, `X-Forwarded-*`, `X-Original-URL`...) (and any the `Connection` header names), plus the injected credential.
 * Each header a `header` constraint `checked` is sent once with the checked value, under the
 * catalogue's name, whatever other spellings the agent sent (the check refuses those).
 * `Accept-Encoding` is always `identity`: the gateway reads every response body for echoes of
 * the credential, which it cannot do in a compressed one; for the same reason `Range` and
 * `If-Range` are dropped when a credential is injected (a slice of an echo is not recognised).
 * Names are compared with `_` read as `-` (see {@link dashedHeaderName}): `x_forwarded_for`
 * and `x_api_key` are dropped as `x-forwarded-for` and a credential named `x-api-key` are.
 */
export function upstreamRequestHeaders(
  incoming: IncomingHttpHeaders,
  credential: { name: string; value: string } | undefined,
  bodyLength: number,
  checked: Readonly<Record<string, string>> = {},
  allowed?: ReadonlySet<string>,
): Record<string, string> {
  const listed = connectionListed(incoming);
  const headers: Record<string, string> = {};
  const credentialName = credential ? dashedHeaderName(credential.name) : undefined;
  const pinned = new Set(Object.keys(checked).map((name) => dashedHeaderName(name.toLowerCase())));
  for (const [name, value] of Object.entries(incoming)) {
    const dashed = dashedHeaderName(name);
    if (value === undefined || DROPPED_REQUEST.has(dashed) || isRoutingHeader(dashed) || listed.has(dashed)) continue;
    if (dashed === credentialName || (credential && DROPPED_WITH_CREDENTIAL.has(dashed)) || pinned.has(dashed)) continue;
    if (allowed && !allowed.has(dashed)) continue;
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  // Headers a constraint checked go up once, with the value checked, under the catalogue's name.
  for (const [name, value] of Object.entries(checked)) headers[name] = value;
  if (bodyLength > 0) headers['content-length'] = String(bodyLength);
  headers['accept-encoding'] = 'identity';
  if (credential) headers[credential.name] = credential.value;
  return headers;
}

/**
 * The request headers (lower case, `_` read as `-`) an operation that declares
 * `request_headers` lets through: those it lists, the safe set every call may carry
 * ({@link SAFE_REQUEST_HEADERS}) and those its `header` constraints bind. `undefined` when it
 * declares none: every header the gateway does not drop is forwarded, as before allowlists.
 * A list that is not an array (a row written outside the admin API) lets through the safe set only.
 */
export function allowedRequestHeaders(operation: ConnectorOperation): ReadonlySet<string> | undefined {
  const listed: unknown = operation.request_headers;
  if (listed === undefined) return undefined;
  // Built once per catalogue entry (cached connectors hand out the same objects), not at each check of each call.
  let allowed = allowedByOperation.get(operation);
  if (allowed) return allowed;
  allowed = new Set(SAFE_REQUEST_HEADERS);
  for (const name of Array.isArray(listed) ? listed : []) if (typeof name === 'string') allowed.add(dashedHeaderName(name.toLowerCase()));
  for (const binding of Object.values(operation.constraints ?? {})) {
    if (binding.in === 'header') allowed.add(dashedHeaderName(binding.field.toLowerCase()));
  }
  allowedByOperation.set(operation, allowed);
  return allowed;
}

/** {@link allowedRequestHeaders} per operation object (weak: dropped with the catalogue that holds it). */
const allowedByOperation = new WeakMap<ConnectorOperation, Set<string>>();

/**
 * The first header of the request (as sent: `raw` alternates names and values) that is
 * neither dropped by the gateway for every call nor in `allowed`, if any: refused rather than
 * silently left out, so that an agent never believes the upstream acted on it.
 */
export function unlistedRequestHeader(raw: readonly string[], allowed: ReadonlySet<string>): string | undefined {
  for (let index = 0; index < raw.length; index += 2) {
    const dashed = dashedHeaderName(raw[index].toLowerCase());
    if (DROPPED_REQUEST.has(dashed) || isRoutingHeader(dashed) || allowed.has(dashed)) continue;
    return raw[index];
  }
  return undefined;
}

/**
 * The upstream's response headers as passed to the agent: no hop-by-hop headers, no cookies
 * or challenges of the upstream's own auth, and no header that carries a secret of the
 * connector (should an upstream ever echo it).
 */
export function agentResponseHeaders(upstream: Record<string, string | string[] | undefined>, secrets: readonly string[]): Record<string, string | string[]> {
  const listed = connectionListed(upstream);
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(upstream)) {
    if (value === undefined || DROPPED_RESPONSE.has(name) || listed.has(name)) continue;
    const text = Array.isArray(value) ? value.join('\n') : value;
    if (secrets.some((secret) => text.includes(secret))) continue;
    headers[name] = value;
  }
  return headers;
}

/**
 * Whether a response body is sent with a `Content-Encoding` other than `identity` (an upstream
 * that compressed although asked not to): its bytes could not be searched for secrets.
 */
export function encodedBody(headers: Record<string, string | string[] | undefined>): string | undefined {
  return codedOtherwise(headers['content-encoding'], ['identity']);
}

/**
 * A response's `Transfer-Encoding` when it names a coding other than `chunked` (`gzip, chunked`):
 * undici takes the chunked framing off and hands on the compressed bytes, which could not be
 * searched for secrets (and the agent, getting them without the header, could still inflate them).
 */
export function compressedTransfer(headers: Record<string, string | string[] | undefined>): string | undefined {
  return codedOtherwise(headers['transfer-encoding'], ['identity', 'chunked']);
}

/** A coding header's value (its first 64 characters) when it names a coding other than `plain`. */
function codedOtherwise(value: string | string[] | undefined, plain: readonly string[]): string | undefined {
  if (value === undefined) return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  const codings = text.split(',').map((coding) => coding.trim().toLowerCase());
  return codings.every((coding) => coding === '' || plain.includes(coding)) ? undefined : text.slice(0, 64);
}
