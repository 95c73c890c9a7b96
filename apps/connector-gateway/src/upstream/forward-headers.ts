import type { IncomingHttpHeaders } from 'node:http';

/** Hop-by-hop headers (RFC 9110 §7.6.1) and those a proxy must not pass on. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authorization', 'proxy-authenticate',
]);

/** Request headers that never reach the upstream: the agent's credentials, routing and overrides. */
const DROPPED_REQUEST = new Set([
  ...HOP_BY_HOP,
  'host', 'authorization', 'cookie', 'dpop', 'content-length', 'expect',
  'forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-real-ip',
  'x-http-method-override', 'x-http-method', 'x-method-override',
]);

/** Response headers never passed back to the agent. */
const DROPPED_RESPONSE = new Set([...HOP_BY_HOP, 'set-cookie', 'set-cookie2', 'www-authenticate']);

/** Request headers that would let a client change the method the upstream acts on. */
export const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;

function connectionListed(headers: IncomingHttpHeaders | Record<string, unknown>): Set<string> {
  const value = headers.connection;
  const text = Array.isArray(value) ? value.join(',') : typeof value === 'string' ? value : '';
  return new Set(text.split(',').map((name) => name.trim().toLowerCase()).filter(Boolean));
}

/**
 * The headers sent upstream: the agent's, minus its credentials, cookies, hop-by-hop and
 * routing headers (and any the `Connection` header names), plus the injected credential.
 */
export function upstreamRequestHeaders(
  incoming: IncomingHttpHeaders,
  credential: { name: string; value: string } | undefined,
  bodyLength: number,
): Record<string, string> {
  const listed = connectionListed(incoming);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || DROPPED_REQUEST.has(name) || listed.has(name)) continue;
    if (credential && name === credential.name) continue;
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  if (bodyLength > 0) headers['content-length'] = String(bodyLength);
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
