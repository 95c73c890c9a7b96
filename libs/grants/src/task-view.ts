import type { Pool } from 'pg';
import { type AccessTokenEntity, type ConnectorDetail, positionInstantSql, type RowOf, type TaskEntity, type TaskStatus } from '@writ/database';
import { EntryBudget, GrantStore } from './grant-store';

/** The state of one credential of a task. */
export type GrantState = 'active' | 'expired' | 'revoked' | 'spent';

/** One credential issued for a task, as shown to orchestrators and admins (never the token). */
export interface TaskGrantDto {
  jti: string;
  connector: string;
  action: string;
  authorization_details: ConnectorDetail[];
  issued_at: string;
  expires_at: string;
  max_uses: number | null;
  uses: number;
  state: GrantState;
  revoked_reason: string | null;
}

/** A task as the Tasks API and the admin API return it. */
export interface TaskDto {
  task_id: string;
  agent_id: string;
  orchestrator_id: string;
  purpose: string;
  allowed: ConnectorDetail[];
  on_behalf_of: string | null;
  /** The verified user the task acts for (their identity provider's issuer and `sub`), or null. */
  user: { iss: string; sub: string } | null;
  metadata: Record<string, unknown>;
  status: TaskStatus;
  status_reason: string | null;
  created_at: string;
  expires_at: string;
  ended_at: string | null;
  history: { grants_issued: number; refusals: number; out_of_purpose_requests: number };
  /** Single-task reads of a task that declares `limits`: what is left of each budget, by `allowed` entry. */
  budgets?: EntryBudget[];
  grants: TaskGrantDto[];
}

/**
 * SQL for a task's count of issued connector credentials (`alias` names the `tasks` row): one
 * index lookup in `task_grant_counts`, which a trigger on `access_tokens` keeps (see the
 * migration TaskGrantCounts), so that reading it does not grow with the task's credentials.
 */
export function grantsIssuedSql(alias: string): string {
  return `COALESCE((SELECT c.issued FROM task_grant_counts c WHERE c.task_id = ${alias}.id), 0)`;
}

const TASK_COLUMNS = `id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, user_issuer, user_subject, metadata, status, status_reason,
  created_at, expires_at, ended_at, ${grantsIssuedSql('tasks')} AS grants_issued, refusals, out_of_purpose_requests`;

/** A `tasks` row as {@link TASK_COLUMNS} selects it. */
export type TaskRow = Omit<RowOf<TaskEntity>, 'task_token_jti'> & { grants_issued: number };

/** A credential row as a task's grant list selects it. */
type GrantRow = Pick<
  RowOf<AccessTokenEntity>,
  'jti' | 'connector_id' | 'action' | 'authorization_details' | 'issued_at' | 'expires_at' | 'max_uses' | 'uses' | 'revoked_at' | 'revoked_reason'
>;

/** Maps a `tasks` row (and its grants) to the DTO; a past-deadline active task shows as `expired`. */
export function toTaskDto(row: TaskRow, grants: TaskGrantDto[] = []): TaskDto {
  const expired = row.status === 'active' && row.expires_at.getTime() <= Date.now();
  return {
    task_id: row.id,
    agent_id: row.agent_id,
    orchestrator_id: row.orchestrator_id,
    purpose: row.purpose,
    allowed: row.allowed,
    on_behalf_of: row.on_behalf_of,
    user: row.user_subject && row.user_issuer ? { iss: row.user_issuer, sub: row.user_subject } : null,
    metadata: row.metadata,
    status: expired ? 'expired' : row.status,
    status_reason: expired ? 'deadline passed' : row.status_reason,
    created_at: row.created_at.toISOString(),
    expires_at: row.expires_at.toISOString(),
    ended_at: row.ended_at ? row.ended_at.toISOString() : null,
    history: { grants_issued: row.grants_issued, refusals: row.refusals, out_of_purpose_requests: row.out_of_purpose_requests },
    grants,
  };
}

/** Reads tasks and their grants for the Tasks API and the admin API. */
export class TaskReader {
  private readonly store: GrantStore;

  constructor(private readonly pool: Pool) {
    this.store = new GrantStore(pool);
  }

  /** One task with its grants, or undefined. `orchestratorId` restricts to that orchestrator's tasks. */
  async get(id: string, orchestratorId?: string): Promise<TaskDto | undefined> {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)) return undefined;
    const { rows } = await this.pool.query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tasks WHERE id = $1`, [id]);
    const row = rows[0];
    if (!row || (orchestratorId !== undefined && row.orchestrator_id !== orchestratorId)) return undefined;
    const grants = await this.pool.query<GrantRow>(
      `SELECT jti, connector_id, action, authorization_details, issued_at, expires_at, max_uses, uses, revoked_at, revoked_reason
         FROM access_tokens WHERE task_id = $1 AND kind = 'connector' ORDER BY issued_at`,
      [id],
    );
    const now = Date.now();
    const limited = (row.allowed as Array<{ limits?: unknown }>).some((entry) => entry.limits !== undefined);
    const budgets = limited ? await this.store.budgetsOf(id) : [];
    const task = toTaskDto(
      row,
      grants.rows.map((grant) => ({
        jti: grant.jti,
        connector: grant.connector_id ?? '',
        action: grant.action ?? '',
        authorization_details: grant.authorization_details ?? [],
        issued_at: grant.issued_at.toISOString(),
        expires_at: grant.expires_at.toISOString(),
        max_uses: grant.max_uses,
        uses: grant.uses,
        state: grant.revoked_at
          ? 'revoked'
          : grant.expires_at.getTime() <= now
            ? 'expired'
            : grant.max_uses !== null && grant.uses >= grant.max_uses
              ? 'spent'
              : 'active',
        revoked_reason: grant.revoked_reason,
      })),
    );
    return budgets.length > 0 ? { ...task, budgets } : task;
  }

  /**
   * A page of tasks, newest first (`created_at` descending, then `id` descending), filtered, before
   * the position `page.before` (the `next` of the previous page). The position's instant is the
   * exact text of `created_at` (see {@link positionInstantSql}): a millisecond one would skip the
   * tasks created later within the millisecond of a page's last one. The comparison stays on the
   * raw column, so the `(agent_id, created_at)` and `(orchestrator_id, created_at)` indexes serve
   * a filtered page in order (a position from before, to the millisecond, still works as it did).
   */
  async list(
    filter: { agentId?: string; orchestratorId?: string; status?: string },
    page: { limit: number; before?: { createdAt: string; id: string } },
  ): Promise<{ items: TaskDto[]; next: { createdAt: string; id: string } | null }> {
    const where: string[] = [];
    const values: unknown[] = [];
    const add = (sql: string, value: unknown) => {
      values.push(value);
      where.push(sql.replace('?', `$${values.length}`));
    };
    if (filter.agentId) add('agent_id = ?', filter.agentId);
    if (filter.orchestratorId) add('orchestrator_id = ?', filter.orchestratorId);
    if (filter.status) add('status = ?', filter.status);
    if (page.before) {
      values.push(page.before.createdAt, page.before.id);
      where.push(`(created_at, id) < ($${values.length - 1}::timestamptz, $${values.length}::uuid)`);
    }
    values.push(page.limit + 1);
    const { rows } = await this.pool.query<TaskRow & { position_at: string }>(
      `SELECT ${TASK_COLUMNS}, ${positionInstantSql('created_at')} AS position_at FROM tasks ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
        ORDER BY created_at DESC, id DESC LIMIT $${values.length}`,
      values,
    );
    const items = rows.slice(0, page.limit);
    const last = items[items.length - 1];
    return {
      items: items.map((row) => toTaskDto(row)),
      next: rows.length > page.limit && last ? { createdAt: last.position_at, id: last.id } : null,
    };
  }
}
