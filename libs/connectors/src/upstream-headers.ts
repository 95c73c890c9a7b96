/** Hop-by-hop headers (RFC 9110 §7.6.1) and those a proxy must not pass on. */
export const HOP_BY_HOP_HEADERS: readonly string[] = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
];

/** Request headers that would let a client change the method the upstream acts on. */
export const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;

/**
 * Headers that tell a server behind a proxy which URL, host or client a request is "really"
 * for. Some frameworks route on them (`X-Original-URL`, `X-Rewrite-URL` rewrite the path in
 * IIS and Symfony), others trust them for client-IP allow lists: the gateway never forwards
 * them, so the upstream acts on exactly the checked target. Any header starting with
 * `x-forwarded-` is dropped too.
 */
export const ROUTING_HEADERS: readonly string[] = [
  'forwarded',
  'x-original-url',
  'x-rewrite-url',
  'x-original-host',
  'x-host',
  'x-http-host-override',
  'true-client-ip',
  'x-client-ip',
  'x-real-ip',
  'x-cluster-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  // Rails' `remote_ip` reads `Client-IP` beside `X-Forwarded-For`; common PHP code reads these two as well.
  'client-ip',
  'x-forwarded',
  'forwarded-for',
];

/** True for a (lower-case) routing header: one of {@link ROUTING_HEADERS} or any `x-forwarded-*`. */
export function isRoutingHeader(name: string): boolean {
  return name.startsWith('x-forwarded-') || ROUTING_HEADERS.includes(name);
}

/**
 * Headers a `header` credential may not be named: those the gateway owns or drops (the
 * agent's `Authorization`, which `bearer` credentials replace; `Host` and framing:
 * `Content-Type`, `Content-Length`, `Transfer-Encoding`, `Expect`; `Cookie`; hop-by-hop
 * headers; method overrides; routing and client-IP headers; `DPoP`).
 */
export const FORBIDDEN_CREDENTIAL_HEADERS: ReadonlySet<string> = new Set([
  'authorization',
  'host',
  'cookie',
  'content-type',
  'content-length',
  'content-encoding',
  'expect',
  'dpop',
  ...HOP_BY_HOP_HEADERS,
  ...METHOD_OVERRIDE_HEADERS,
  ...ROUTING_HEADERS,
]);

/** True when a `header` credential may not use this name (any case). */
export function isForbiddenCredentialHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return FORBIDDEN_CREDENTIAL_HEADERS.has(lower) || isRoutingHeader(lower);
}

/**
 * Request headers an operation's `header` constraint may not bind: those a `header` credential
 * may not be named (see {@link FORBIDDEN_CREDENTIAL_HEADERS}), and those the gateway sets,
 * replaces or drops on the way upstream (`Accept-Encoding`, `Range` and its kin, the trace
 * context, the MCP session): the upstream would not get the checked value.
 */
const UNCONSTRAINABLE_HEADERS: ReadonlySet<string> = new Set([
  'accept-encoding',
  'range',
  'if-range',
  'request-range',
  'traceparent',
  'tracestate',
  'mcp-session-id',
]);

/** True when a `header` constraint may not bind this header name (any case, `_` read as `-`). */
export function isUnconstrainableHeader(name: string): boolean {
  const lower = name.toLowerCase().replace(/_/g, '-');
  return isForbiddenCredentialHeader(lower) || UNCONSTRAINABLE_HEADERS.has(lower);
}

/**
 * Request headers the gateway never forwards as the agent sent them, for any connector: the
 * agent's credentials, `Host` and framing it sets itself, `Cookie`, `Expect`, hop-by-hop
 * headers, method overrides, routing and client-IP headers (any `x-forwarded-*` too, see
 * {@link isRoutingHeader}), and `Accept-Encoding` (always `identity`). Lower case.
 */
export const DROPPED_REQUEST_HEADERS: ReadonlySet<string> = new Set([
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

/**
 * The request headers every call may carry when its operation declares `request_headers`:
 * content negotiation, the body's type and length, the client's name, conditional requests,
 * the W3C trace context and the fetch metadata (`Sec-Fetch-*`) a `fetch` client adds. None of them selects an account, a tenant or an upstream route.
 */
export const SAFE_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  'accept',
  'accept-language',
  'content-type',
  'content-length',
  'user-agent',
  'if-match',
  'if-none-match',
  'if-modified-since',
  'if-unmodified-since',
  'traceparent',
  'tracestate',
  // Fetch metadata: set by the client's fetch itself (Node's adds Sec-Fetch-Mode to every request).
  'sec-fetch-mode',
  'sec-fetch-site',
  'sec-fetch-dest',
  'sec-fetch-user',
]);

/** True when an operation's `request_headers` may not list this name: the gateway drops or sets it whatever the list says. */
export function isUnlistableRequestHeader(name: string): boolean {
  const lower = name.toLowerCase().replace(/_/g, '-');
  return !SAFE_REQUEST_HEADERS.has(lower) && (DROPPED_REQUEST_HEADERS.has(lower) || isRoutingHeader(lower));
}
