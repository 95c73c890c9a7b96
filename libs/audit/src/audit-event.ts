/** Who caused an event. */
export type AuditActorType = 'agent' | 'orchestrator' | 'admin' | 'system' | 'anonymous';

/** How an event ended. */
export type AuditOutcome = 'success' | 'denied' | 'failure' | 'error' | 'info';

/** An event as services describe it, before it joins the chain. */
export interface AuditEventInput {
  /** Dotted name, e.g. `token.issued`; every type is listed in docs/audit.md. */
  type: string;
  outcome: AuditOutcome;
  actor: { type: AuditActorType; id?: string | null };
  agentId?: string | null;
  taskId?: string | null;
  connectorId?: string | null;
  /** Event details. Never a secret, a whole token or a client assertion. */
  data?: Record<string, unknown>;
}

/** An event as stored: its place in the chain and the hashes that prove it. */
export interface AuditRecord {
  seq: number;
  id: string;
  occurred_at: string;
  type: string;
  outcome: AuditOutcome;
  actor_type: AuditActorType;
  actor_id: string | null;
  agent_id: string | null;
  task_id: string | null;
  connector_id: string | null;
  data: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

/** Filters of the audit list and export. */
export interface AuditQuery {
  agentId?: string;
  taskId?: string;
  connectorId?: string;
  type?: string;
  outcome?: string;
  since?: Date;
  until?: Date;
}

/** The result of walking the chain. */
export interface AuditVerification {
  valid: boolean;
  events: number;
  first_invalid_seq?: number;
  reason?: string;
  /** Signed checkpoints whose hash was found in the chain (before the first problem). */
  checkpoints_verified: number;
  /** The `seq` of the last checkpoint in the database; events after it are not yet signed. */
  last_checkpoint_seq: number | null;
  /** How many checkpoints the external file held, when one was read. */
  external_checkpoints?: number;
  /** The checkpoint that failed, when a checkpoint is the problem. */
  invalid_checkpoint_seq?: number;
  /** An incremental walk: the signed checkpoint it resumed from (events up to it were verified before). */
  resumed_from_seq?: number;
  /** The chain starts after this seq: events up to it were archived and pruned under a signed marker. */
  pruned_up_to_seq?: number;
}
