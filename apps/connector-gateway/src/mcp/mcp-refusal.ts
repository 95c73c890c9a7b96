import { InsufficientScopeError, OAuthError } from '@writ/oauth';

/** JSON-RPC error codes for the gateway's refusals of one MCP request (the implementation-defined server range). */
export const MCP_REFUSED = -32003;
/** The request's parameters cannot be checked as the server will read them (the 400s). */
export const MCP_INVALID_PARAMS = -32602;

/** A JSON-RPC request id (a string or a number; JSON-RPC allows null for unknown ids, never used here). */
export type JsonRpcId = string | number;

/** The id of a JSON-RPC request, when `message` is one (notifications and responses have none that a refusal answers). */
export function requestIdOf(message: unknown): JsonRpcId | undefined {
  if (message === null || typeof message !== 'object' || Array.isArray(message)) return undefined;
  const { id, method } = message as { id?: unknown; method?: unknown };
  if (typeof method !== 'string') return undefined;
  // An id beyond 2^53 is not the id the client sent once parsed: its refusal stays an HTTP error.
  return typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id)) ? id : undefined;
}

/**
 * The JSON-RPC error that answers an MCP request the gateway refused after accepting its
 * credential (`403 insufficient_scope`, `400` on its parameters), or `undefined` for errors that
 * stay HTTP errors (401 with its challenge, 429 with `Retry-After`, 5xx). MCP clients end the
 * whole session on an HTTP error (the Python SDK's transport does); a JSON-RPC error fails
 * only the call, and the model reads why. `data` is the gateway's error body (`error`,
 * `error_description`, `rule` or `field`), as an HTTP client would have got it.
 */
export function mcpRefusal(id: JsonRpcId | undefined, error: unknown): Record<string, unknown> | undefined {
  if (id === undefined || !(error instanceof OAuthError) || (error.status !== 400 && error.status !== 403)) return undefined;
  const body = error.toJSON();
  return {
    jsonrpc: '2.0',
    id,
    error: {
      code: error instanceof InsufficientScopeError ? MCP_REFUSED : MCP_INVALID_PARAMS,
      message: `Writ refused this request (${body.error}${error instanceof InsufficientScopeError ? `, rule ${error.rule}` : ''}): ${body.error_description}`,
      data: body,
    },
  };
}
