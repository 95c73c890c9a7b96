import type { Pool, PoolClient } from 'pg';
import type { AuditActorType, AuditEventInput } from '@writ/audit';
import type { AuditedTransaction, TaskStatus } from '@writ/database';
import { EndedTaskRow, GrantStore } from './grant-store';

/** Who asked for a revocation. */
export interface RevocationActor {
  type: AuditActorType;
  id: string | null;
}

/** The outcome of ending a task. */
export interface EndedTask {
  /** False when the task was not active (nothing changed). */
  changed: boolean;
  status: TaskStatus | null;
  revokedTokens: number;
}

/**
 * Most credentials one `token.revoked` event lists. A revocation of more (a task, an agent or a
 * connector with thousands of credentials) is recorded as consecutive `token.revoked` events of
 * at most this many `jtis` each, committed together: every revoked jti is in the log, and no
 * single event (hashed, written and read back under the chain-head lock) grows with them.
 */
export const REVOKED_JTIS_PER_EVENT = 500;

/**
 * The `token.revoked` events of one revocation of `jtis` (none: no event). Each lists at most
 * {@link REVOKED_JTIS_PER_EVENT} of them and says how many the revocation revoked (`count`);
 * when there are more, the events carry `part` (1-based) and `parts`, in jti order as revoked.
 */
export function tokenRevokedEvents(
  event: Pick<AuditEventInput, 'actor' | 'agentId' | 'taskId' | 'connectorId'>,
  jtis: readonly string[],
  reason: string,
): AuditEventInput[] {
  const parts = Math.ceil(jtis.length / REVOKED_JTIS_PER_EVENT);
  return Array.from({ length: parts }, (_, index) => ({
    ...event,
    type: 'token.revoked',
    outcome: 'success' as const,
    data: {
      reason,
      jtis: jtis.slice(index * REVOKED_JTIS_PER_EVENT, (index + 1) * REVOKED_JTIS_PER_EVENT),
      count: jtis.length,
      ...(parts > 1 ? { part: index + 1, parts } : {}),
    },
  }));
}

/** Who ends a task found past its deadline when another end was asked for: the deadline, not the caller. */
const DEADLINE_ACTOR: RevocationActor = { type: 'system', id: 'task-deadline' };

/**
 * The audit events of a task end: `task.<status>`, and `token.revoked` listing its revoked
 * credentials ({@link tokenRevokedEvents}). `requested` is the end that was asked for: when the
 * task was found past its deadline instead (`ended.status` is `expired`), the events are the
 * expiry sweep's (actor `system`, reason `deadline passed`), and `task.expired` also names the
 * end that was asked for and who asked (`requested_status`, `requested_by`).
 */
export function taskEndEvents(taskId: string, requested: Exclude<TaskStatus, 'active'>, actor: RevocationActor, ended: EndedTaskRow): AuditEventInput[] {
  const { status, reason } = ended;
  const overtaken = status !== requested;
  const by = overtaken ? DEADLINE_ACTOR : actor;
  return [
    {
      type: `task.${status}`,
      outcome: 'success',
      actor: by,
      agentId: ended.agentId,
      taskId,
      data: { status, reason, ...(overtaken ? { requested_status: requested, requested_by: { type: actor.type, id: actor.id } } : {}) },
    },
    ...tokenRevokedEvents({ actor: by, agentId: ended.agentId, taskId }, ended.jtis, `task ${status}`),
  ];
}

/**
 * Ends tasks and revokes credentials. Each change and its audit events commit in one
 * transaction before the call returns; the gateway reads revocation state from PostgreSQL on
 * every call, so a revocation is effective on every instance as soon as this resolves.
 */
export class CredentialRevoker {
  private readonly grants: GrantStore;

  constructor(
    private readonly pool: Pool,
    private readonly transaction: AuditedTransaction<AuditEventInput>,
  ) {
    this.grants = new GrantStore(pool);
  }

  /**
   * Moves an active task to a final status and revokes every credential issued for it.
   * A task that is no longer active is left as it is (`changed: false`). A task past its
   * deadline becomes `expired` whatever `status` is asked for (see {@link GrantStore.endTask}):
   * `status` in the answer is the one it ended with.
   */
  async endTask(taskId: string, status: Exclude<TaskStatus, 'active'>, reason: string, actor: RevocationActor): Promise<EndedTask> {
    const result = await this.transaction.run(
      async (client) => {
        const ended = await this.grants.endTask(client, taskId, status, reason);
        if (!ended) {
          const current = await client.query<{ status: TaskStatus }>('SELECT status FROM tasks WHERE id = $1', [taskId]);
          return { status: current.rows[0]?.status ?? null, ended: undefined };
        }
        return { status: ended.status, ended };
      },
      (outcome) => (outcome.ended ? taskEndEvents(taskId, status, actor, outcome.ended) : []),
    );
    return { changed: result.ended !== undefined, status: result.status, revokedTokens: result.ended?.jtis.length ?? 0 };
  }

  /** Revokes every live credential of an agent (suspension or deletion), in one transaction with its event. */
  async revokeForAgent(client: PoolClient, agentId: string, reason: string): Promise<string[]> {
    const { rows } = await client.query<{ jti: string }>(
      `UPDATE access_tokens SET revoked_at = now(), revoked_reason = $2
        WHERE subject = $1 AND kind = 'connector' AND revoked_at IS NULL AND expires_at > now() RETURNING jti`,
      [agentId, reason],
    );
    return rows.map((row) => row.jti);
  }

  /** Revokes every live credential issued for a connector (deletion). */
  async revokeForConnector(client: PoolClient, connectorId: string, reason: string): Promise<string[]> {
    const { rows } = await client.query<{ jti: string }>(
      `UPDATE access_tokens SET revoked_at = now(), revoked_reason = $2
        WHERE connector_id = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING jti`,
      [connectorId, reason],
    );
    return rows.map((row) => row.jti);
  }

  /**
   * Revokes every live credential issued for some operations of a connector (their method,
   * path or constraints changed, or they were removed), inside the caller's transaction.
   */
  async revokeForOperations(client: PoolClient, connectorId: string, operations: readonly string[], reason: string): Promise<string[]> {
    if (operations.length === 0) return [];
    const { rows } = await client.query<{ jti: string }>(
      `UPDATE access_tokens SET revoked_at = now(), revoked_reason = $3
        WHERE connector_id = $1 AND action = ANY($2::text[]) AND revoked_at IS NULL AND expires_at > now() RETURNING jti`,
      [connectorId, operations, reason],
    );
    return rows.map((row) => row.jti);
  }

  /**
   * Marks every active task past its deadline as `expired` and revokes its credentials.
   * Safe to run on every instance at once (each task is ended once). Returns the count.
   */
  async expireDueTasks(limit = 500): Promise<number> {
    const { rows } = await this.pool.query<{ id: string }>(
      `SELECT id FROM tasks WHERE status = 'active' AND expires_at <= now() ORDER BY expires_at LIMIT $1`,
      [limit],
    );
    let expired = 0;
    for (const row of rows) {
      const outcome = await this.endTask(row.id, 'expired', 'deadline passed', { type: 'system', id: 'task-sweeper' });
      if (outcome.changed) expired += 1;
    }
    return expired;
  }
}
