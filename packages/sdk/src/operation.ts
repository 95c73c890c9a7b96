import type { TaskAgent } from './agent.js';
import { WritError, WritOAuthError } from './errors.js';
import { readJson } from './client.js';

/**
 * The HTTP request a tool makes through the gateway for one invocation (an `http` connector;
 * for `mcp` connectors, give an MCP client `Agent.mcpFetch` instead).
 */
export interface OperationCall {
  method?: string;
  /** Relative to the connector, e.g. `/v1/payouts` (absolute URLs are refused). */
  path: string;
  /** Query parameters appended to `path`. */
  query?: Record<string, string | number | boolean>;
  json?: unknown;
}

/** A connector operation that a framework tool wraps: the arguments decide both the grant and the call. */
export interface OperationSpec<Input> {
  connector: string;
  /** The catalogue operation, e.g. `payouts.create`. */
  action: string;
  /** The constraints to ask Writ for, from the tool's arguments (exactly this call, no wider). */
  constraints?: (input: Input) => Record<string, unknown>;
  /** The request to send through the gateway, from the tool's arguments. */
  request: (input: Input) => OperationCall;
}

/** A successful call: the upstream's status and (JSON, else text) body. */
export interface OperationResult {
  status: number;
  body: unknown;
}

/**
 * A refusal a model can read: the policy's reasons (token exchange) or the gateway's rule
 * (403 `insufficient_scope`) or the upstream's error status. Tool wrappers surface it as the
 * tool's error.
 */
export class ToolRefusalError extends WritError {
  readonly status?: number;
  readonly reasons: string[];

  constructor(message: string, options: { status?: number; reasons?: string[]; cause?: unknown } = {}) {
    super('tool_refused', message, { cause: options.cause });
    this.status = options.status;
    this.reasons = options.reasons ?? [];
  }
}

function withQuery(path: string, query?: OperationCall['query']): string {
  if (!query || Object.keys(query).length === 0) return path;
  const search = new URLSearchParams(Object.entries(query).map(([name, value]): [string, string] => [name, String(value)]));
  return `${path}${path.includes('?') ? '&' : '?'}${search.toString()}`;
}

/**
 * Runs one tool invocation: asks Writ for exactly this operation with the constraints the
 * arguments imply, calls through the gateway, and returns the result or throws a
 * {@link ToolRefusalError} whose message says why (for the model to read).
 */
export async function runOperation<Input>(agent: TaskAgent, spec: OperationSpec<Input>, input: Input, signal?: AbortSignal): Promise<OperationResult> {
  const call = spec.request(input);
  const request = { connector: spec.connector, action: spec.action, constraints: spec.constraints?.(input) };
  let response: Response;
  try {
    response = await agent.fetch(request, withQuery(call.path, call.query), { method: call.method, json: call.json, signal });
  } catch (error) {
    if (error instanceof WritOAuthError) {
      const why = error.reasons.length > 0 ? error.reasons.join('; ') : (error.description ?? error.error);
      throw new ToolRefusalError(`Writ refused ${spec.action} on ${spec.connector} (${error.error}): ${why}`, {
        status: error.status,
        reasons: error.reasons,
        cause: error,
      });
    }
    if (error instanceof WritError) throw new ToolRefusalError(`Writ refused ${spec.action} on ${spec.connector}: ${error.message}`, { cause: error });
    throw error;
  }
  const body = await readBody(response);
  if (response.ok) return { status: response.status, body };
  const detail = body && typeof body === 'object' ? (body as Record<string, unknown>) : {};
  const rule = typeof detail.rule === 'string' ? `, rule ${detail.rule}` : '';
  const error = typeof detail.error === 'string' ? ` ${detail.error}` : '';
  const description =
    typeof detail.error_description === 'string' ? `: ${detail.error_description}` : typeof body === 'string' && body ? `: ${body.slice(0, 500)}` : '';
  throw new ToolRefusalError(`${spec.action} on ${spec.connector} failed with ${response.status}${error}${rule}${description}`, { status: response.status });
}

async function readBody(response: Response): Promise<unknown> {
  const type = response.headers.get('content-type') ?? '';
  if (/[/+]json\b/.test(type)) return readJson(response);
  return response.text();
}
