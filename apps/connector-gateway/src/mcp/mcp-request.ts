import type { ConnectorOperation, ConstraintBinding } from '@writ/database';
import { InsufficientScopeError, InvalidRequestError, safeToken } from '@writ/oauth';
import { foldCase } from '@writ/connectors';
import { allowedRequestHeaders } from '../upstream/forward-headers';

/** What the gateway decided about one request to an `mcp` connector. */
export interface McpCall {
  /** The JSON-RPC method (`tools/call`, `initialize`...), `response` for the client's answer to a server request, or `GET`/`DELETE`. */
  method: string;
  /** `tools/call` only: the tool, its constraints rebound to the JSON-RPC body (`params.arguments.<field>`). */
  tool?: ConnectorOperation;
  /** `tools/call` only: the call spends a use and reserves task budgets, as an HTTP operation does. */
  spends: boolean;
  /** The tools the session may see (those its task allows on the connector): tool lists are filtered to them. */
  granted: ReadonlySet<string>;
  /** The request headers the message may carry (see {@link mcpRequestHeaders}); `undefined`: every header the gateway does not drop. */
  headers?: ReadonlySet<string>;
}

/** Methods any holder of a credential for the connector may send (no use spent, still audited). */
const FREE_METHODS = new Set(['initialize', 'ping', 'tools/list']);

/**
 * A notification any holder of a credential may send: `notifications/` and a name of printable
 * ASCII, 128 characters in all. Its method is recorded as it is in two audit events (the
 * `gateway.call` and the `gateway.upstream`), and a notification spends nothing: a method of any
 * length (up to the body limit) would let an agent write megabytes into the append-only log per
 * free request. Every notification MCP defines is a short ASCII name.
 */
const NOTIFICATION_METHOD = /^notifications\/[\x21-\x7e]{1,114}$/;

/** The members of a JSON-RPC 2.0 message (its section 4 and 5): nothing else is forwarded. */
const MESSAGE_MEMBERS = new Set(['jsonrpc', 'id', 'method', 'params', 'result', 'error']);
/** The members of `tools/call` params the gateway reads (`_meta` carries the progress token). */
const TOOL_CALL_MEMBERS = new Set(['name', 'arguments', '_meta']);

/**
 * A member whose name is one of `known` only once case is folded (`Method`, `PARAMS`, `ſtop`):
 * Go's `encoding/json` (the Go MCP SDK) and ASP.NET bind it as that member, so the upstream
 * would act on a method, tool or arguments the gateway did not read.
 */
function caseFoldedMember(message: Record<string, unknown>, known: ReadonlySet<string>): string | undefined {
  const names = [...known].map(foldCase);
  return Object.keys(message).find((key) => !known.has(key) && names.includes(foldCase(key)));
}

/** A JSON-RPC id the gateway reads as the upstream does: a string or an integer a double holds exactly (MCP: never null). */
function validId(id: unknown): boolean {
  return typeof id === 'string' || (typeof id === 'number' && Number.isSafeInteger(id));
}

/** The Streamable HTTP transport's own headers: any message may carry them beside the safe set (the session is checked by the gateway). */
const MCP_TRANSPORT_HEADERS = ['mcp-session-id', 'mcp-protocol-version', 'last-event-id'];

/**
 * The request headers a message may carry when tools declare `request_headers`: a tool call,
 * those of its tool; any other message (initialize, tools/list, notifications, the event
 * stream...), only those every tool that declares a list allows. A session is shared by every
 * credential of its task, and a server may keep what the headers of its `initialize` said (a
 * tenant, a toolset) for the tool calls that follow. The transport's own headers are always
 * allowed. `undefined` when none of `tools` declares a list: every header the gateway does not
 * drop is forwarded, as for an HTTP operation without one.
 */
export function mcpRequestHeaders(tools: readonly ConnectorOperation[]): ReadonlySet<string> | undefined {
  let allowed: Set<string> | undefined;
  for (const tool of tools) {
    const listed = allowedRequestHeaders(tool);
    if (listed) allowed = new Set(allowed ? [...allowed].filter((name) => listed.has(name)) : listed);
  }
  if (allowed) for (const name of MCP_TRANSPORT_HEADERS) allowed.add(name);
  return allowed;
}

/** The values of `object`'s members named `name` once case is folded (Go's `encoding/json` binds `Roots` as `roots`). */
function membersNamed(object: unknown, name: string): unknown[] {
  if (!isPlainObject(object)) return [];
  return Object.keys(object)
    .filter((key) => foldCase(key) === name)
    .map((key) => object[key]);
}

/**
 * Whether an `initialize` declares the client's `roots` capability. Roots are the directories
 * the client lets the server operate in, and servers take them as their boundary: the official
 * filesystem server replaces the directories it was started with by the client's roots. The
 * agent is the client here: it must not choose the boundary the connector's server was given.
 * A server that conforms never asks for roots of a client that does not declare them.
 */
function declaresRoots(params: unknown): boolean {
  return membersNamed(params, 'capabilities').some((capabilities) => membersNamed(capabilities, 'roots').length > 0);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** An `mcp` connector's tools, as stored (`{name, risk, constraints}`). */
export function parseToolCatalogue(operationsText: string): ConnectorOperation[] {
  const parsed = JSON.parse(operationsText) as unknown;
  return Array.isArray(parsed) ? (parsed.filter(isPlainObject) as unknown as ConnectorOperation[]) : [];
}

/**
 * A tool with its `arguments` constraints read from the JSON-RPC body it arrives in, so that
 * the HTTP constraint engine (strict JSON, exact numbers, bounds) checks them unchanged.
 */
function boundToBody(tool: ConnectorOperation): ConnectorOperation {
  const constraints: Record<string, ConstraintBinding> = {};
  for (const [name, binding] of Object.entries(tool.constraints ?? {})) {
    // Only `arguments` is valid for a tool; anything else is made unreadable rather than trusted.
    constraints[name] =
      binding.in === 'arguments'
        ? { ...binding, in: 'body', field: `params.arguments.${binding.field}` }
        : { ...binding, in: 'body', field: 'params.arguments.\u0000' };
  }
  return { ...tool, method: 'POST', path: '/', constraints };
}

/**
 * Classifies one request to an `mcp` connector (Streamable HTTP) and refuses what the grant
 * does not allow. `POST` carries exactly one JSON-RPC message (batches are refused: the
 * 2025-06-18 revision removed them, and one message is one audited decision) with only the
 * members JSON-RPC defines, an id that is a string or a safe integer, and either a method or a
 * result/error (a case-insensitive upstream must not find another reading in it): `tools/call`
 * needs its tool in the catalogue and in the credential's `actions`; `initialize`, `ping`,
 * `tools/list`, notifications and answers to the server's own requests are allowed to any
 * holder of a credential for the connector, except roots (an `initialize` declaring them,
 * `notifications/roots/list_changed`, an answer carrying them: see {@link declaresRoots}); every other method (resources, prompts,
 * completion, logging...) is refused. `GET` (the server's event stream) and `DELETE` (end of
 * session) carry no message and are allowed likewise. Each carries the headers
 * {@link mcpRequestHeaders} allows it. Tool lists are cut to `visible` (the
 * tools of the catalogue the task allows: a credential grants one tool, but the session's
 * client is shown every tool it may get a credential for).
 */
export function classifyMcpRequest(
  httpMethod: string,
  message: unknown,
  tools: readonly ConnectorOperation[],
  actions: readonly string[],
  visible: readonly string[] = actions,
): McpCall {
  const known = new Set(tools.map((tool) => tool.name));
  const granted = new Set(visible.filter((action) => known.has(action)));
  if (httpMethod === 'GET' || httpMethod === 'DELETE') {
    if (message !== undefined) throw new InvalidRequestError(`an MCP ${httpMethod} request carries no body`, { reason: 'mcp_body_not_allowed' });
    return { method: httpMethod, spends: false, granted, headers: mcpRequestHeaders(tools) };
  }
  if (httpMethod !== 'POST') {
    throw new InvalidRequestError('an MCP connector accepts POST, GET and DELETE only (Streamable HTTP)', { reason: 'mcp_http_method' });
  }
  if (Array.isArray(message)) {
    throw new InvalidRequestError('JSON-RPC batches are not accepted: send one message per request', { reason: 'mcp_batch' });
  }
  if (!isPlainObject(message) || message.jsonrpc !== '2.0') {
    throw new InvalidRequestError('the body must be one JSON-RPC 2.0 message', { reason: 'mcp_not_jsonrpc' });
  }
  // Only the members JSON-RPC defines: a `Method` or `PARAMS` beside them is read by
  // case-insensitive upstreams as the member itself (a "response" that is a tools/call).
  const unknown = Object.keys(message).find((key) => !MESSAGE_MEMBERS.has(key));
  if (unknown !== undefined) {
    throw new InvalidRequestError(`the JSON-RPC message has a member ${JSON.stringify(unknown.slice(0, 64))} that JSON-RPC 2.0 does not define`, {
      reason: 'mcp_not_jsonrpc',
    });
  }
  if (Object.hasOwn(message, 'id') && !validId(message.id)) {
    throw new InvalidRequestError('the JSON-RPC id must be a string or an integer of at most 2^53 - 1', { reason: 'mcp_id' });
  }
  const method = message.method;
  const answers = Object.hasOwn(message, 'result') || Object.hasOwn(message, 'error');
  if (method === undefined) {
    if (Object.hasOwn(message, 'id') && answers && !Object.hasOwn(message, 'params')) {
      // A server that asks anyway (the SDK server checks the capability only in its strict mode) gets no roots either.
      if (membersNamed(message.result, 'roots').length > 0) {
        throw new InsufficientScopeError('the client may not answer with roots through the gateway: they would set the directories the server operates in', {
          rule: 'mcp_roots',
        });
      }
      return { method: 'response', spends: false, granted, headers: mcpRequestHeaders(tools) };
    }
    throw new InvalidRequestError('the body must be one JSON-RPC 2.0 message', { reason: 'mcp_not_jsonrpc' });
  }
  if (answers) {
    throw new InvalidRequestError('a JSON-RPC message is a request or a response, not both (method with result or error)', { reason: 'mcp_not_jsonrpc' });
  }
  if (typeof method !== 'string') throw new InvalidRequestError('the JSON-RPC method must be a string', { reason: 'mcp_not_jsonrpc' });
  if (method === 'initialize' && declaresRoots(message.params)) {
    throw new InsufficientScopeError('the client may not declare roots through the gateway: they would set the directories the server operates in', {
      rule: 'mcp_roots',
    });
  }
  if (method === 'notifications/roots/list_changed') {
    throw new InsufficientScopeError('roots are not available through the gateway (the server keeps the directories it was given)', { rule: 'mcp_roots' });
  }
  if (FREE_METHODS.has(method) || NOTIFICATION_METHOD.test(method)) return { method, spends: false, granted, headers: mcpRequestHeaders(tools) };
  if (method !== 'tools/call') {
    throw new InsufficientScopeError(`the MCP method ${safeToken(method)} is not available through the gateway (only tools are granted)`, {
      rule: 'mcp_method',
    });
  }
  const params = message.params;
  const name = isPlainObject(params) ? params.name : undefined;
  if (typeof name !== 'string') throw new InvalidRequestError('tools/call needs params.name, a string', { reason: 'mcp_tool_name' });
  const variant = isPlainObject(params) ? caseFoldedMember(params, TOOL_CALL_MEMBERS) : undefined;
  if (variant !== undefined) {
    throw new InvalidRequestError(`tools/call params has ${JSON.stringify(variant.slice(0, 64))}: only "name", "arguments" and "_meta" in that case`, {
      reason: 'mcp_arguments',
    });
  }
  if (isPlainObject(params) && params.arguments !== undefined && !isPlainObject(params.arguments)) {
    throw new InvalidRequestError('tools/call params.arguments must be an object', { reason: 'mcp_arguments' });
  }
  const tool = tools.find((entry) => entry.name === name);
  if (!tool) throw new InsufficientScopeError(`the connector has no tool ${safeToken(name, 128)}`, { rule: 'operation' });
  if (!actions.includes(tool.name)) throw new InsufficientScopeError(`tool ${tool.name} is not granted by this credential`, { rule: 'action' });
  return { method, tool: boundToBody(tool), spends: true, granted, headers: mcpRequestHeaders([tool]) };
}
