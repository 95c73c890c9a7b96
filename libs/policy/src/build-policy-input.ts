import type { PolicyInput } from './policy-input';

/** One `authorization_details` entry of type `connector`. */
export interface PolicyConnectorDetail {
  type: 'connector';
  connector: string;
  actions: string[];
  constraints?: Record<string, unknown>;
  /** RFC 9396 `locations`, when the agent or the task gave any. */
  locations?: string[];
}

/** A catalogue operation as the policy sees it. */
export interface PolicyOperation {
  method: string;
  path: string;
  risk: 'read' | 'write';
  constraints: Record<string, { in: string; field: string; op: string }>;
}

/** What the server knows when it asks the policy. */
export interface PolicyFacts {
  request: {
    grantType: string;
    authorizationDetails: PolicyConnectorDetail[];
    resource: string | null;
    dpopJkt: string | null;
  };
  agent: { id: string; name: string; status: string };
  task: {
    id: string;
    agentId: string;
    orchestratorId: string;
    purpose: string;
    status: string;
    allowed: PolicyConnectorDetail[];
    createdAt: Date;
    expiresAt: Date;
    onBehalfOf: string | null;
    /** The verified user (absent: none). */
    user?: { issuer: string; subject: string } | null;
    metadata: Record<string, unknown>;
    grantsIssued: number;
    refusals: number;
    outOfPurposeRequests: number;
    /** What is left of the budgets of the entries that declare `limits` (absent: none). */
    budgets?: PolicyInput['task']['budgets'];
  };
  connectors: Array<{ id: string; name: string; operations: Array<PolicyOperation & { name: string }> }>;
  /** The task user's connections on the requested connectors that use connected accounts (absent: none). */
  connections?: PolicyInput['connections'];
  now: Date;
}

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

/**
 * Builds the policy input document (documented in docs/policies.md) from what the server
 * knows. The same function serves token exchange and the admin dry run, so a dry run sees
 * exactly what a real request would.
 */
export function buildPolicyInput(facts: PolicyFacts): PolicyInput {
  const { request, agent, task, now } = facts;
  const nowUnix = Math.floor(now.getTime() / 1000);
  return {
    request: {
      grant_type: request.grantType,
      authorization_details: request.authorizationDetails,
      resource: request.resource,
      dpop_jkt: request.dpopJkt,
    },
    agent: { id: agent.id, name: agent.name, status: agent.status },
    task: {
      id: task.id,
      agent_id: task.agentId,
      orchestrator_id: task.orchestratorId,
      purpose: task.purpose,
      status: task.status,
      allowed: task.allowed,
      created_at: task.createdAt.toISOString(),
      expires_at: task.expiresAt.toISOString(),
      seconds_remaining: Math.max(0, Math.floor((task.expiresAt.getTime() - now.getTime()) / 1000)),
      on_behalf_of: task.onBehalfOf,
      user: task.user ? { iss: task.user.issuer, sub: task.user.subject } : null,
      metadata: task.metadata,
      budgets: task.budgets ?? [],
      history: {
        grants_issued: task.grantsIssued,
        refusals: task.refusals,
        out_of_purpose_requests: task.outOfPurposeRequests,
      },
    },
    connectors: Object.fromEntries(
      facts.connectors.map((connector) => [
        connector.id,
        {
          id: connector.id,
          name: connector.name,
          operations: Object.fromEntries(connector.operations.map(({ name, method, path, risk, constraints }) => [name, { method, path, risk, constraints }])),
        },
      ]),
    ),
    connections: facts.connections ?? {},
    time: {
      now: now.toISOString(),
      now_unix: nowUnix,
      weekday: WEEKDAYS[now.getUTCDay()],
      hour_utc: now.getUTCHours(),
    },
  };
}
