import { randomUUID } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import type { AuditActorType, AuditEventInput } from '@writ/audit';
import { type ApprovalEntity, type AuditedTransaction, positionInstantSql, type RowOf } from '@writ/database';
import { APPROVAL_INTEGRITY_COLUMNS, approvalIntegrityFieldsOf, type ApprovalIntegrityRow, type RowIntegrity } from './row-integrity';

/** A canonical UUID: anything else (e.g. 36 dashes) never reaches the `uuid` column. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Where an approval stands. `expired` is derived: pending or approved past `expires_at`. */
export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'used' | 'expired';

/** An approval as the admin API and the token endpoint see it. */
export interface ApprovalDto {
  id: string;
  task_id: string;
  agent_id: string;
  connector_id: string;
  authorization_details: unknown[];
  reasons: string[];
  policy_version: string;
  status: ApprovalStatus;
  requested_at: string;
  expires_at: string;
  decided_at: string | null;
  decided_by: string | null;
  note: string | null;
  used_at: string | null;
  /** The thumbprint of the DPoP key the agent asked with (null: none): the credential is bound to it, or to no key. */
  dpop_jkt: string | null;
}

/** What a new approval holds. */
export interface ApprovalRequest {
  taskId: string;
  agentId: string;
  connectorId: string;
  authorizationDetails: unknown[];
  reasons: string[];
  policyVersion: string;
  expiresAt: Date;
  /** The DPoP key thumbprint the agent asked with (null: none): the only key the approval will buy a credential for. */
  dpopJkt: string | null;
  /** Runs first in the recording transaction; throwing records nothing (e.g. a stale decision). */
  check?: (client: PoolClient) => Promise<void>;
}

/** Seconds an agent should wait between two polls of a pending approval. */
export const APPROVAL_POLL_INTERVAL_SECONDS = 5;
/** How long an approval request stays open at most (never past its task). */
export const APPROVAL_MAX_SECONDS = 3600;
/**
 * Pending approvals one task may hold at once. Past it a request for approval is refused:
 * a hijacked agent cannot flood the people who decide (and the approval webhook) until one
 * of them approves by mistake, the "approval fatigue" that MFA push bombing exploits.
 */
export const MAX_PENDING_APPROVALS_PER_TASK = 10;

/** A request for approval refused because its task already holds {@link MAX_PENDING_APPROVALS_PER_TASK} pending ones. */
export class TooManyPendingApprovalsError extends Error {
  constructor(readonly pending: number) {
    super(`the task already has ${pending} approval requests pending (at most ${MAX_PENDING_APPROVALS_PER_TASK}): wait for a decision on them`);
    this.name = 'TooManyPendingApprovalsError';
  }
}

/**
 * A request for approval refused because a person already denied exactly it (same details, by
 * the same agent) on this task: asking them again and again until one approves by mistake is
 * the "approval fatigue" that MFA push bombing exploits. The task's orchestrator may declare a
 * new task if the situation changed.
 */
export class ApprovalDeniedBeforeError extends Error {
  constructor(readonly approvalId: string) {
    super(`a person denied this request on this task (approval ${approvalId}): it is not asked again`);
    this.name = 'ApprovalDeniedBeforeError';
  }
}

/**
 * What {@link ApprovalStore.request} did: recorded a new approval, found the same request pending
 * (or approved and not yet used), or refused it (too many pending, or denied before).
 */
type RequestOutcome =
  { kind: 'new' | 'repeated'; approval: ApprovalDto } | { kind: 'refused'; pending: number } | { kind: 'denied_before'; approvalId: string };

/** A row of `approvals`. */
type ApprovalRow = RowOf<ApprovalEntity>;

/** A row of `approvals` (alias `a`) read with {@link TASK_OPEN}. */
type ApprovalReadRow = ApprovalRow & { task_open: boolean };

/**
 * SQL: whether the task of approval `a` is still open (active, before its deadline). An approval
 * lives no longer than its task: once the task is completed, failed, revoked or past its deadline,
 * a pending or approved approval is `expired` (it could never buy a credential), and can no longer
 * be decided.
 */
const TASK_OPEN = `EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id AND t.status = 'active' AND t.expires_at > now())`;

function toDto(row: ApprovalRow, taskOpen = true): ApprovalDto {
  const open = row.status === 'pending' || row.status === 'approved';
  return {
    id: row.id,
    task_id: row.task_id,
    agent_id: row.agent_id,
    connector_id: row.connector_id,
    authorization_details: row.authorization_details,
    reasons: row.reasons,
    policy_version: row.policy_version,
    status: open && (row.expires_at.getTime() <= Date.now() || !taskOpen) ? 'expired' : row.status,
    requested_at: row.requested_at.toISOString(),
    expires_at: row.expires_at.toISOString(),
    decided_at: row.decided_at ? row.decided_at.toISOString() : null,
    decided_by: row.decided_by,
    note: row.note,
    used_at: row.used_at ? row.used_at.toISOString() : null,
    dpop_jkt: row.dpop_jkt ?? null,
  };
}

/**
 * Human approvals of risky grants. Each change commits with its audit event
 * (`approval.requested`, `approval.approved`, `approval.denied`, `approval.used`). A decision is
 * tagged as Writ writes it (see `row-integrity`) and verified where the approval is consumed: an
 * approval a database administrator set to `approved` (or whose details or deadline they changed)
 * buys nothing.
 */
export class ApprovalStore {
  constructor(
    private readonly pool: Pool,
    private readonly transaction: AuditedTransaction<AuditEventInput>,
    private readonly integrity: RowIntegrity,
  ) {}

  /**
   * Records a pending approval holding the exact details asked for (with `events` that led to it,
   * in one transaction); returns it. The same request (same task, agent, details, DPoP key and
   * policy version) already pending is returned instead of a second one, so that repeating it neither
   * queues nor announces it twice; so is the same request (same task, agent, details and DPoP key)
   * approved and not yet used: a person is not asked to approve a second credential they may take
   * for a duplicate of the first. The same details that a person denied on this task (whatever the
   * key or policy version) are not asked again: `events` and the refusal are recorded, then
   * {@link ApprovalDeniedBeforeError} is thrown. A task holding
   * {@link MAX_PENDING_APPROVALS_PER_TASK} pending approvals gets no more: `events` and the refusal
   * are recorded, then {@link TooManyPendingApprovalsError} is thrown. No check can be raced by
   * requests in parallel on any instance: audited work runs under the audit chain head's row
   * lock, one unit after another.
   */
  async request(request: ApprovalRequest, actor: { type: AuditActorType; id: string }, events: AuditEventInput[] = []): Promise<ApprovalDto> {
    const details = JSON.stringify(request.authorizationDetails);
    const outcome = await this.transaction.run<RequestOutcome>(
      async (client) => {
        await request.check?.(client);
        const earlier = await client.query<ApprovalRow>(
          `SELECT a.* FROM approvals a
            WHERE a.task_id = $1 AND a.agent_id = $2 AND a.authorization_details = $3::jsonb
              AND (a.status = 'denied' OR (a.status = 'approved' AND a.expires_at > now() AND a.dpop_jkt IS NOT DISTINCT FROM $4))
            ORDER BY a.status = 'denied' DESC, a.requested_at LIMIT 1`,
          [request.taskId, request.agentId, details, request.dpopJkt],
        );
        const decided = earlier.rows[0];
        if (decided?.status === 'denied') return { kind: 'denied_before', approvalId: decided.id };
        if (decided) return { kind: 'repeated', approval: toDto(decided) };
        const pending = await client.query<ApprovalRow & { same: boolean }>(
          `SELECT a.*, (a.agent_id = $2 AND a.authorization_details = $3::jsonb AND a.policy_version = $4 AND a.dpop_jkt IS NOT DISTINCT FROM $5) AS same
             FROM approvals a WHERE a.task_id = $1 AND a.status = 'pending' AND a.expires_at > now() ORDER BY a.requested_at`,
          [request.taskId, request.agentId, details, request.policyVersion, request.dpopJkt],
        );
        const same = pending.rows.find((row) => row.same);
        if (same) return { kind: 'repeated', approval: toDto(same) };
        if (pending.rows.length >= MAX_PENDING_APPROVALS_PER_TASK) return { kind: 'refused', pending: pending.rows.length };
        const { rows } = await client.query<ApprovalRow>(
          `INSERT INTO approvals (id, task_id, agent_id, connector_id, authorization_details, reasons, policy_version, status, expires_at, dpop_jkt)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9) RETURNING *`,
          [
            randomUUID(),
            request.taskId,
            request.agentId,
            request.connectorId,
            details,
            JSON.stringify(request.reasons),
            request.policyVersion,
            request.expiresAt,
            request.dpopJkt,
          ],
        );
        return { kind: 'new', approval: toDto(rows[0]) };
      },
      (result) => {
        const base = { actor, agentId: request.agentId, taskId: request.taskId, connectorId: request.connectorId };
        const what = { authorization_details: request.authorizationDetails, reasons: request.reasons, policy_version: request.policyVersion };
        if (result.kind === 'denied_before' || result.kind === 'refused') {
          const why =
            result.kind === 'denied_before'
              ? { reason: 'denied_before', approval_id: result.approvalId }
              : { reason: 'too_many_pending', pending: result.pending };
          return [...events, { ...base, type: 'approval.refused', outcome: 'denied' as const, data: { ...why, ...what } }];
        }
        return [
          ...events,
          {
            ...base,
            type: 'approval.requested',
            outcome: 'info' as const,
            data: {
              approval_id: result.approval.id,
              ...what,
              expires_at: result.approval.expires_at,
              ...(result.kind === 'repeated' ? { repeated: true } : {}),
            },
          },
        ];
      },
    );
    if (outcome.kind === 'refused') throw new TooManyPendingApprovalsError(outcome.pending);
    if (outcome.kind === 'denied_before') throw new ApprovalDeniedBeforeError(outcome.approvalId);
    return outcome.approval;
  }

  /** One approval, or `undefined`. */
  async get(id: string): Promise<ApprovalDto | undefined> {
    if (!UUID.test(id)) return undefined;
    const { rows } = await this.pool.query<ApprovalReadRow>(`SELECT a.*, ${TASK_OPEN} AS task_open FROM approvals a WHERE a.id = $1`, [id]);
    return rows[0] ? toDto(rows[0], rows[0].task_open) : undefined;
  }

  /**
   * Approvals newest first (`requested_at` descending, then `id` descending), optionally by status
   * and task, before the position `page.before` (the `next` of the previous page). The position's
   * instant is the exact text of `requested_at` (see {@link positionInstantSql}): a millisecond one
   * would skip the approvals requested later within the millisecond of a page's last one.
   */
  async list(
    filter: { status?: string; taskId?: string },
    page: { limit: number; before?: { at: string; id: string } },
  ): Promise<{ items: ApprovalDto[]; next: { at: string; id: string } | null }> {
    const where: string[] = [];
    const values: unknown[] = [];
    if (filter.status === 'expired') where.push(`a.status IN ('pending', 'approved') AND (a.expires_at <= now() OR NOT ${TASK_OPEN})`);
    else if (filter.status === 'pending' || filter.status === 'approved') where.push(`a.status = '${filter.status}' AND a.expires_at > now() AND ${TASK_OPEN}`);
    else if (filter.status) {
      values.push(filter.status);
      where.push(`a.status = $${values.length}`);
    }
    if (filter.taskId) {
      values.push(filter.taskId);
      where.push(`a.task_id = $${values.length}::uuid`);
    }
    if (page.before) {
      values.push(page.before.at, page.before.id);
      where.push(`(a.requested_at, a.id) < ($${values.length - 1}::timestamptz, $${values.length}::uuid)`);
    }
    values.push(page.limit + 1);
    const { rows } = await this.pool.query<ApprovalReadRow & { position_at: string }>(
      `SELECT a.*, ${TASK_OPEN} AS task_open, ${positionInstantSql('a.requested_at')} AS position_at FROM approvals a ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
        ORDER BY a.requested_at DESC, a.id DESC LIMIT $${values.length}`,
      values,
    );
    const items = rows.slice(0, page.limit).map((row) => toDto(row, row.task_open));
    const last = rows.length > page.limit ? rows[page.limit - 1] : undefined;
    return { items, next: last ? { at: last.position_at, id: last.id } : null };
  }

  /**
   * Approves or denies a pending, unexpired approval of a task still open (checked under a share
   * lock on the task row, so a task ending meanwhile on any instance is seen: see
   * {@link TASK_OPEN}). Returns the approval after the change, or `undefined` if there is none;
   * `changed: false` when it was no longer pending (an approval of an ended task reads `expired`).
   * `check` runs first in the deciding transaction: throwing decides nothing (e.g. the admin
   * token that asked was revoked while the decision waited for the audit chain head).
   */
  async decide(
    id: string,
    decision: 'approved' | 'denied',
    actor: { type: AuditActorType; id: string },
    note: string | null,
    check?: (client: PoolClient) => Promise<void>,
  ): Promise<{ approval: ApprovalDto | undefined; changed: boolean }> {
    if (!UUID.test(id)) return { approval: undefined, changed: false };
    const result = await this.transaction.run(
      async (client) => {
        await check?.(client);
        const { rows } = await client.query<ApprovalRow>(
          `UPDATE approvals a SET status = $2, decided_at = now(), decided_by = $3, note = $4
            WHERE a.id = $1 AND a.status = 'pending' AND a.expires_at > now()
              AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id AND t.status = 'active' AND t.expires_at > now() FOR SHARE)
           RETURNING a.*`,
          [id, decision, actor.id, note],
        );
        if (rows[0]) {
          // The decision as stored (decided_at to the millisecond, as read), tagged in the same transaction.
          const tag = this.integrity.tagApproval(approvalIntegrityFieldsOf(rows[0]));
          await client.query('UPDATE approvals SET integrity_tag = $2 WHERE id = $1', [id, tag]);
          return { approval: toDto(rows[0]), changed: true };
        }
        const current = await client.query<ApprovalReadRow>(`SELECT a.*, ${TASK_OPEN} AS task_open FROM approvals a WHERE a.id = $1`, [id]);
        const row = current.rows[0];
        return { approval: row ? toDto(row, row.task_open) : undefined, changed: false };
      },
      (outcome) =>
        outcome.changed && outcome.approval
          ? [
              {
                type: `approval.${decision}`,
                outcome: 'success' as const,
                actor,
                agentId: outcome.approval.agent_id,
                taskId: outcome.approval.task_id,
                connectorId: outcome.approval.connector_id,
                data: { approval_id: id, note, authorization_details: outcome.approval.authorization_details },
              },
            ]
          : [],
    );
    return result;
  }

  /**
   * Marks an approved approval used, inside the issuing transaction; false if it cannot be used
   * (any more), or if its decision is not one Writ wrote (its integrity tag does not verify as
   * `approved`: reported, and the caller's refusal rolls the change back). A used approval loses
   * its tag: set back to `approved` by hand, it verifies no more (unless the DBA kept the tag).
   */
  async consume(client: PoolClient, id: string): Promise<boolean> {
    // The row locked and read as decided (its tag before it is cleared), then marked used: one statement.
    const { rows } = await client.query<ApprovalIntegrityRow>(
      `UPDATE approvals a SET status = 'used', used_at = now(), integrity_tag = NULL
         FROM (SELECT id, integrity_tag FROM approvals WHERE id = $1 FOR UPDATE) AS decided
        WHERE a.id = decided.id AND a.status = 'approved' AND a.expires_at > now() AND ${TASK_OPEN}
       RETURNING ${APPROVAL_INTEGRITY_COLUMNS.split(', ')
         .map((column) => (column === 'integrity_tag' ? 'decided.integrity_tag' : `a.${column}`))
         .join(', ')}`,
      [id],
    );
    const row = rows[0];
    if (!row) return false;
    return this.integrity.verifyApproval({ ...approvalIntegrityFieldsOf(row), status: 'approved' }, row.integrity_tag);
  }
}
