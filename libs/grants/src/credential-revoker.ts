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

/** The audit events of a task end: `task.<status>`, and `token.revoked` listing its revoked credentials. */
export function taskEndEvents(
  taskId: string,
  status: Exclude<TaskStatus, 'active'>,
  reason: string,
  actor: RevocationActor,
  ended: EndedTaskRow,
): AuditEventInput[] {
  return [
    { type: `task.${status}`, outcome: 'success', actor, agentId: ended.agentId, taskId, data: { status, reason } },
    ...(ended.jtis.length
      ? [
          {
            type: 'token.revoked',
            outcome: 'success' as const,
            actor,
            agentId: ended.agentId,
            taskId,
            data: { reason: `task ${status}`, jtis: ended.jtis, count: ended.jtis.length },
          },
        ]
      : []),
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
   * A task that is no longer active is left as it is (`changed: false`).
   */
  async endTask(taskId: string, status: Exclude<TaskStatus, 'active'>, reason: string, actor: RevocationActor): Promise<EndedTask> {
    const result = await this.transaction.run(
      async (client) => {
        const ended = await this.grants.endTask(client, taskId, status, reason);
        if (!ended) {
          const current = await client.query<{ status: TaskStatus }>('SELECT status FROM tasks WHERE id = $1', [taskId]);
          return { changed: false, status: current.rows[0]?.status ?? null, agentId: null, jtis: [] as string[] };
        }
        return { changed: true, status, agentId: ended.agentId, jtis: ended.jtis };
      },
      (outcome) => (outcome.changed ? taskEndEvents(taskId, status, reason, actor, { agentId: outcome.agentId!, jtis: outcome.jtis }) : []),
    );
    return { changed: result.changed, status: result.status, revokedTokens: result.jtis.length };
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
