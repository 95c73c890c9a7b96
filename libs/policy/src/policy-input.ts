/**
 * The input document the server gives the policy (`input` in Rego). docs/policies.md
 * describes every field for policy authors; keep the two in step.
 */

/** One RFC 9396 `authorization_details` entry of type `connector`. */
export interface ConnectorAuthorizationDetail {
  type: 'connector' | (string & {});
  connector: string;
  actions: string[];
  /** Constraint name → value, e.g. `{"destination": "acct_1", "amount_max": 50000}`. */
  constraints?: Record<string, unknown>;
  /** RFC 9396 `locations`, when given: only ever the connector's URL on the gateway. */
  locations?: string[];
  /** In `task.allowed` only: the entry's declared budgets (`calls`, `sum`). */
  limits?: { calls?: number; sum?: Record<string, number> };
}

/** How a catalogue operation binds a constraint name to a request field. */
export interface PolicyOperationConstraint {
  in: 'path' | 'query' | 'body' | 'header' | (string & {});
  field: string;
  op: 'eq' | 'lte' | 'gte' | 'in' | (string & {});
}

/** One operation of a connector's catalogue, keyed by its name in {@link PolicyConnector.operations}. */
export interface PolicyOperation {
  method: string;
  path: string;
  risk: 'read' | 'write' | (string & {});
  constraints: Record<string, PolicyOperationConstraint>;
}

/** A registered connector, without its upstream credential. */
export interface PolicyConnector {
  id: string;
  name: string;
  operations: Record<string, PolicyOperation>;
}

/** A user's connected account on a connector, as the policy sees it (never a token). */
export interface PolicyConnection {
  status: 'active' | 'broken' | (string & {});
  /** The scopes the upstream granted. */
  scopes: string[];
}

/** A declared limit and what is left of it. */
export interface PolicyBudgetLeft {
  limit: number;
  used: number;
  remaining: number;
}

/** The budgets of one `allowed` entry that declares `limits`. */
export interface PolicyEntryBudget {
  entry: number;
  calls?: PolicyBudgetLeft;
  sum?: Record<string, PolicyBudgetLeft>;
}

/** The whole input document. */
export interface PolicyInput {
  request: {
    grant_type: string;
    authorization_details: ConnectorAuthorizationDetail[];
    /** The RFC 8707 `resource` parameter, or null when absent. */
    resource: string | null;
    /** The RFC 9449 DPoP key thumbprint the token will be bound to, or null. */
    dpop_jkt: string | null;
  };
  agent: {
    id: string;
    name: string;
    status: 'active' | 'suspended' | (string & {});
  };
  task: {
    id: string;
    agent_id: string;
    orchestrator_id: string;
    purpose: string;
    status: 'active' | 'completed' | 'failed' | 'expired' | 'revoked' | (string & {});
    /** The declared purpose: what every grant is checked against. */
    allowed: ConnectorAuthorizationDetail[];
    /** RFC 3339. */
    created_at: string;
    /** RFC 3339. */
    expires_at: string;
    /** Whole seconds until `expires_at` at `time.now`, never negative. */
    seconds_remaining: number;
    on_behalf_of: string | null;
    /** The verified user the task acts for (issuer and `sub` of their identity provider), or null. */
    user: { iss: string; sub: string } | null;
    metadata: Record<string, unknown>;
    /**
     * What is left of each budget declared by an `allowed` entry's `limits`, one item per
     * limited entry (`entry` is its index in `allowed`); empty when the task declares none.
     */
    budgets?: PolicyEntryBudget[];
    history: {
      grants_issued: number;
      refusals: number;
      /** Out-of-purpose requests before this one. */
      out_of_purpose_requests: number;
    };
  };
  /** The connectors named in the request that are registered, by id; an unknown one is absent. */
  connectors: Record<string, PolicyConnector>;
  /**
   * For each requested connector that uses per-user connected accounts
   * (`oauth2_authorization_code`): the task user's connection, or null when the task has no
   * verified user or the user has not connected. Other connectors are absent.
   */
  connections: Record<string, PolicyConnection | null>;
  time: {
    /** RFC 3339, UTC. */
    now: string;
    now_unix: number;
    weekday: 'Mon' | 'Tue' | 'Wed' | 'Thu' | 'Fri' | 'Sat' | 'Sun' | (string & {});
    /** 0..23, UTC. */
    hour_utc: number;
  };
}
