import type { IncomingHttpHeaders } from 'node:http';
import { HOP_BY_HOP_HEADERS, isRoutingHeader, METHOD_OVERRIDE_HEADERS, ROUTING_HEADERS } from '@writ/connectors';

/** Request headers that never reach the upstream: the agent's credentials, framing, routing and overrides. */
const DROPPED_REQUEST = new Set([
  ...HOP_BY_HOP_HEADERS,
  ...METHOD_OVERRIDE_HEADERS,
  ...ROUTING_HEADERS,
  'host',
  'authorization',
  'cookie',
  'dpop',
  'content-length',
  'expect',
  'accept-encoding',
]);

/** Response headers never passed back to the agent. */
const DROPPED_RESPONSE = new Set([...HOP_BY_HOP_HEADERS, 'set-cookie', 'set-cookie2', 'www-authenticate']);

export { METHOD_OVERRIDE_HEADERS };

const NONE_LISTED: ReadonlySet<string> = new Set();

function connectionListed(headers: IncomingHttpHeaders | Record<string, unknown>): ReadonlySet<string> {
  const value = headers.connection;
  if (value === undefined) return NONE_LISTED;
  const text = Array.isArray(value) ? value.join(',') : typeof value === 'string' ? value : '';
  return new Set(
    text
      .split(',')
      .map((name) => name.trim().toLowerCase())
      .filter(Boolean),
  );
}

/**
 * The headers sent upstream: the agent's, minus its credentials, cookies, hop-by-hop,
 * routing and client-IP headers (`Forwarded`, `X-Forwarded-*`, `X-Original-URL`...) (and any the `Connection` header names), plus the injected credential.
 * `Accept-Encoding` is always `identity`: the gateway reads every response body for echoes of
 * the credential, which it cannot do in a compressed one.
 */
export function upstreamRequestHeaders(
  incoming: IncomingHttpHeaders,
  credential: { name: string; value: string } | undefined,
  bodyLength: number,
): Record<string, string> {
  const listed = connectionListed(incoming);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || DROPPED_REQUEST.has(name) || isRoutingHeader(name) || listed.has(name)) continue;
    if (credential && name === credential.name) continue;
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  if (bodyLength > 0) headers['content-length'] = String(bodyLength);
  headers['accept-encoding'] = 'identity';
  if (credential) headers[credential.name] = credential.value;
  return headers;
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
  const value = headers['content-encoding'];
  if (value === undefined) return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  const codings = text.split(',').map((coding) => coding.trim().toLowerCase());
  return codings.every((coding) => coding === '' || coding === 'identity') ? undefined : text.slice(0, 64);
}
