/**
 * `@writ/sdk`: task-scoped credentials for AI agents.
 *
 * - {@link Orchestrator}: declares tasks (client credentials, `private_key_jwt`) and ends them;
 *   `runTask` completes or fails every task it starts.
 * - {@link Agent}: token exchange for one operation on one connector (RFC 8693 + RFC 9396),
 *   DPoP-bound by default, cached, approval-aware; `fetch` through the connector gateway;
 *   `mcpFetch` for an MCP client transport (one credential per tool call).
 * - `@writ/sdk/ai`: a Vercel AI SDK tool wrapping a connector operation.
 *
 * Runtime code uses only `fetch` and WebCrypto (Node.js 20+, Deno, Bun, edge runtimes).
 */
export { Agent, TaskAgent, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_JWT } from './agent.js';
export type { AgentOptions, Credential, CredentialOptions, GatewayBody, GatewayRequestInit, McpFetchOptions, PendingApproval } from './agent.js';
export { Orchestrator } from './orchestrator.js';
export type { CreatedTask, RunTaskOptions, TaskSpec } from './orchestrator.js';
export type { ClientKeyInput, WritClientOptions } from './client.js';
export { MAX_ANSWER_BYTES } from './client.js';
export {
  AccessDeniedError,
  ApprovalTimeoutError,
  GatewayPathError,
  InvalidClientError,
  InvalidGrantError,
  PolicyRefusalError,
  reasonsOf,
  WritError,
  WritOAuthError,
  WritResponseError,
  WritTimeoutError,
} from './errors.js';
export type { FieldError, OAuthErrorBody } from './errors.js';
export { gatewayUrlFor } from './gateway-path.js';
export { runOperation, ToolRefusalError } from './operation.js';
export type { OperationCall, OperationResult, OperationSpec } from './operation.js';
export type { AllowedEntry, AuthorizationDetail, BudgetLeft, ConnectorRequest, EntryBudget, GrantInfo, TaskInfo } from './types.js';
