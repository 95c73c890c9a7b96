import type { Pool } from 'pg';
import { type AccessTokenEntity, type ConnectorDetail, positionInstantSql, type RowOf, type TaskEntity, type TaskStatus } from '@writ/database';
import { EntryBudget, GrantStore } from './grant-store';

/**
 * Most grants one read of a task shows. An agent adds a credential per exchange (thousands a
 * second): a read that listed them all would let a hijacked agent fill the memory of the
 * authorization server or the admin API, and hold up the end of its own task, by minting.
 */
export const TASK_GRANTS_PAGE_SIZE = 100;

/** A position in a task's grants (oldest first): the exact instant of a grant's `issued_at` and its `jti`. */
export interface GrantPosition {
  issuedAt: string;
  jti: string;
}

/** The exact text of an `issued_at` as `positionInstantSql` selects it: microseconds, UTC. */
const GRANT_INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
/** A credential's `jti` (a UUID; other ids of at most 128 URL-safe characters are accepted, and compared as text). */
const GRANT_JTI = /^[A-Za-z0-9_-]{1,128}$/;

/** The `grants_cursor` of the page after `position` (base64url of JSON, opaque to callers). */
export function encodeGrantsCursor(position: GrantPosition): string {
  return Buffer.from(JSON.stringify({ t: position.issuedAt, j: position.jti }), 'utf8').toString('base64url');
}

/**
 * The position a `grants_cursor` query parameter names: `{}` when absent (the first page),
 * undefined when it is not a cursor of a task's grants (not one string, not base64url JSON, an
 * impossible instant): the caller answers `400` naming `grants_cursor`. A cursor is a position
 * only: the task is always the one the path names.
 */
export function decodeGrantsCursor(raw: unknown): { after?: GrantPosition } | undefined {
  if (raw === undefined) return {};
  if (typeof raw !== 'string' || raw.length > 512 || !/^[A-Za-z0-9_-]+$/.test(raw)) return undefined;
  let value: { t?: unknown; j?: unknown } | null;
  try {
    value = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as { t?: unknown; j?: unknown } | null;
  } catch {
    return undefined;
  }
  const t = value?.t;
  const j = value?.j;
  // A real date from 1970 on (what PostgreSQL reads as written: no February 30, no year 0).
  const at = typeof t === 'string' && GRANT_INSTANT.test(t) ? Date.parse(t) : NaN;
  if (!(at >= 0) || new Date(at).toISOString().slice(0, 19) !== (t as string).slice(0, 19)) return undefined;
  if (typeof j !== 'string' || !GRANT_JTI.test(j)) return undefined;
  return { after: { issuedAt: t as string, jti: j } };
}

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
  /** Single-task reads: at most {@link TASK_GRANTS_PAGE_SIZE} grants, oldest first (lists: none). */
  grants: TaskGrantDto[];
  /** Single-task reads: the `grants_cursor` of the next page of grants, null after the last. */
  grants_next_cursor?: string | null;
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

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Reads tasks and their grants for the Tasks API and the admin API. */
export class TaskReader {
  private readonly store: GrantStore;

  constructor(private readonly pool: Pool) {
    this.store = new GrantStore(pool);
  }

  /** Whether the task exists (and, with `orchestratorId`, is that orchestrator's), without reading its grants. */
  async exists(id: string, orchestratorId?: string): Promise<boolean> {
    if (!UUID.test(id)) return false;
    const { rows } = await this.pool.query<{ orchestrator_id: string }>(`SELECT orchestrator_id FROM tasks WHERE id = $1`, [id]);
    return rows[0] !== undefined && (orchestratorId === undefined || rows[0].orchestrator_id === orchestratorId);
  }

  /**
   * One task with a page of its grants (oldest first, after `after`, at most
   * {@link TASK_GRANTS_PAGE_SIZE}), or undefined. `orchestratorId` restricts to that orchestrator's tasks.
   */
  async get(id: string, orchestratorId?: string, after?: GrantPosition): Promise<TaskDto | undefined> {
    if (!UUID.test(id)) return undefined;
    const { rows } = await this.pool.query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tasks WHERE id = $1`, [id]);
    const row = rows[0];
    if (!row || (orchestratorId !== undefined && row.orchestrator_id !== orchestratorId)) return undefined;
    // The position's instant is the exact text of `issued_at` (a millisecond one would skip the
    // grants of its millisecond); credentials of one audit batch share `issued_at`: `jti` orders them.
    const grants = await this.pool.query<GrantRow & { position_at: string }>(
      `SELECT jti, connector_id, action, authorization_details, issued_at, expires_at, max_uses, uses, revoked_at, revoked_reason,
              ${positionInstantSql('issued_at')} AS position_at
         FROM access_tokens WHERE task_id = $1 AND kind = 'connector'
          ${after ? 'AND (issued_at, jti) > ($3::timestamptz, $4::text)' : ''}
        ORDER BY issued_at, jti LIMIT $2`,
      after ? [id, TASK_GRANTS_PAGE_SIZE + 1, after.issuedAt, after.jti] : [id, TASK_GRANTS_PAGE_SIZE + 1],
    );
    const page = grants.rows.slice(0, TASK_GRANTS_PAGE_SIZE);
    const last = page[page.length - 1];
    const next = grants.rows.length > TASK_GRANTS_PAGE_SIZE && last ? encodeGrantsCursor({ issuedAt: last.position_at, jti: last.jti }) : null;
    const now = Date.now();
    const limited = (row.allowed as Array<{ limits?: unknown }>).some((entry) => entry.limits !== undefined);
    const budgets = limited ? await this.store.budgetsOf(id) : [];
    const task = toTaskDto(
      row,
      page.map((grant) => ({
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
    const paged = { ...task, grants_next_cursor: next };
    return budgets.length > 0 ? { ...paged, budgets } : paged;
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
