/** One RFC 9396 `authorization_details` entry of type `connector`. */
export interface AuthorizationDetail {
  type: 'connector';
  connector: string;
  actions: string[];
  constraints?: Record<string, unknown>;
}

/** An entry of a task's declared purpose (`allowed`): operations, constraints, optional limits. */
export interface AllowedEntry {
  connector: string;
  actions: string[];
  constraints?: Record<string, unknown>;
  /** Held across all credentials of the task: `calls`, and `sum` per constraint name. */
  limits?: { calls?: number; sum?: Record<string, number> };
}

/** What an agent asks for: one operation on one connector, with the constraints it needs. */
export interface ConnectorRequest {
  connector: string;
  /** The operation (catalogue name), e.g. `payouts.create`. */
  action: string;
  /** Constraint values, e.g. `{destination: 'acct_1', amount_max: 42000, currency: 'usd'}`. */
  constraints?: Record<string, unknown>;
}

/** A declared limit of a task and what is left of it. */
export interface BudgetLeft {
  limit: number;
  used: number;
  remaining: number;
}

/** The budgets of one limited `allowed` entry (its index in `allowed`). */
export interface EntryBudget {
  entry: number;
  calls?: BudgetLeft;
  sum?: Record<string, BudgetLeft>;
}

/** One credential issued for a task, as the Tasks API shows it (never the token). */
export interface GrantInfo {
  jti: string;
  connector: string;
  action: string;
  authorization_details: AuthorizationDetail[];
  issued_at: string;
  expires_at: string;
  /** Uses the policy allowed (`null`: unlimited until it expires). */
  max_uses: number | null;
  uses: number;
  state: 'active' | 'expired' | 'revoked' | 'spent' | (string & Record<never, never>);
  revoked_reason: string | null;
  [member: string]: unknown;
}

/** A task as the Tasks API shows it. */
export interface TaskInfo {
  task_id: string;
  agent_id: string;
  orchestrator_id: string;
  purpose: string;
  /** The declared purpose, each entry with its `limits` when it has any. */
  allowed: Array<AuthorizationDetail & { limits?: AllowedEntry['limits'] }>;
  on_behalf_of: string | null;
  /** The verified user the task acts for, or null. */
  user?: { iss: string; sub: string } | null;
  metadata: Record<string, unknown>;
  status: 'active' | 'completed' | 'failed' | 'expired' | 'revoked' | (string & Record<never, never>);
  status_reason: string | null;
  created_at: string;
  expires_at: string;
  ended_at: string | null;
  history?: { grants_issued: number; refusals: number; out_of_purpose_requests: number };
  /** At most 100 grants, oldest first (`history.grants_issued` counts them all). */
  grants?: GrantInfo[];
  /** Send back as `?grants_cursor=` for the next 100 grants; null after the last page. */
  grants_next_cursor?: string | null;
  /** What is left of each limited `allowed` entry's budgets. */
  budgets?: EntryBudget[];
  [member: string]: unknown;
}
