import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { AuditService, AuditVerification, readableRecord, verifiedChainHash } from '@writ/audit';
import { CredentialRevoker, decodeGrantsCursor, TaskDto, TaskReader } from '@writ/grants';
import { PG_POOL } from '@writ/database';
import { isPositionInstant, isUuid, NotFoundError, ValidationFailedError } from '@writ/platform';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { decodeCursor, encodeCursor, Page } from '../common/cursor';
import { DEFAULT_PAGE_SIZE } from '../common/page-query.dto';
import type { TaskEvidenceDto } from './dto/task-evidence.dto';
import type { ListTasksQueryDto } from './dto/task.dtos';

/** A task as the admin API shows it: the Tasks API's view and the calls made with its credentials. */
export interface AdminTaskView extends TaskDto {
  calls: number;
}

/**
 * Shape check of a task list cursor `{c: created_at, i: id}`: `c` is the exact instant of the
 * position, to the microsecond (a cursor from before, to the millisecond, is still read), checked
 * as a real date before it reaches PostgreSQL.
 */
function isTaskCursor(value: unknown): value is { c: string; i: string } {
  const cursor = value as { c?: unknown; i?: unknown } | null;
  return isPositionInstant(cursor?.c) && isUuid(cursor?.i);
}

/** The admin view of tasks: every orchestrator's, with revocation and evidence. */
@Injectable()
export class AdminTasksService {
  private readonly reader: TaskReader;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    private readonly revoker: CredentialRevoker,
  ) {
    this.reader = new TaskReader(pool);
  }

  /** A page of tasks, newest first, filtered. */
  async list(query: ListTasksQueryDto): Promise<Page<AdminTaskView>> {
    const before = decodeCursor(query.cursor, isTaskCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const page = await this.reader.list(
      { agentId: query.agent_id, orchestratorId: query.orchestrator_id, status: query.status },
      { limit, before: before ? { createdAt: before.c, id: before.i } : undefined },
    );
    return {
      items: await this.withCalls(page.items),
      next_cursor: page.next ? encodeCursor({ c: page.next.createdAt, i: page.next.id }) : null,
    };
  }

  /** One task with a page of its grants (`grantsCursor`: the `grants_cursor` query parameter), or `404`. */
  async get(id: string, grantsCursor?: string): Promise<AdminTaskView> {
    const page = decodeGrantsCursor(grantsCursor);
    if (!page) throw new ValidationFailedError([{ field: 'grants_cursor', message: "is not a cursor of a task's grants" }], 'the query is invalid');
    const task = await this.reader.get(id, undefined, page.after);
    if (!task) throw new NotFoundError('task');
    return (await this.withCalls([task]))[0];
  }

  /**
   * Adds each task's count of calls the gateway forwarded (its `gateway.call` events with
   * outcome `success`), read from the audit log through its `(task_id, seq)` index.
   */
  private async withCalls(tasks: TaskDto[]): Promise<AdminTaskView[]> {
    if (tasks.length === 0) return [];
    const { rows } = await this.pool.query<{ task_id: string; calls: number }>(
      `SELECT task_id, count(*)::int AS calls FROM audit_events
        WHERE task_id = ANY($1::text[]) AND type = 'gateway.call' AND outcome = 'success'
        GROUP BY task_id`,
      [tasks.map((task) => task.task_id)],
    );
    const calls = new Map(rows.map((row) => [row.task_id, row.calls]));
    return tasks.map((task) => ({ ...task, calls: calls.get(task.task_id) ?? 0 }));
  }

  /**
   * Revokes an active task and every credential of it before answering (a task already
   * ended is returned as it is). The status change, `task.revoked` and `token.revoked` commit
   * together with the admin as their actor: that `task.revoked` is the admin change's event.
   */
  async revoke(principal: AdminPrincipal, id: string, reason: string | undefined): Promise<AdminTaskView> {
    // Checked without reading its grants (a task's agent decides how many there are).
    if (!(await this.reader.exists(id))) throw new NotFoundError('task');
    const why = reason ?? 'revoked by an administrator';
    await this.revoker.endTask(id, 'revoked', why, adminActor(principal));
    return this.get(id);
  }

  /** The full walk of the audit chain under way for evidence answers, if any. */
  private walking: Promise<AuditVerification> | undefined;
  /** The walk that starts when it ends, shared by every answer that asks meanwhile. */
  private queued: Promise<AuditVerification> | undefined;

  /**
   * A full walk of the audit chain that starts after this call: at once when none is under way,
   * else right after the one under way, shared by every caller that arrived meanwhile. Any viewer
   * may ask for evidence, and each walk reads the whole log: with one walk per request, a burst
   * of requests held as many connections and cores as it liked. A walk already under way is not
   * joined, since its snapshot may predate the events the caller has just read.
   */
  private freshWalk(): Promise<AuditVerification> {
    if (!this.walking) return this.startWalk();
    this.queued ??= this.walking
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.startWalk();
      });
    return this.queued;
  }

  private startWalk(): Promise<AuditVerification> {
    const walk: Promise<AuditVerification> = this.audit.verify().finally(() => {
      if (this.walking === walk) this.walking = undefined;
    });
    this.walking = walk;
    return walk;
  }

  /**
   * The task and every audit event about it in chain order. `chain.verified` holds when each
   * event's hash recomputes from its own content and `prev_hash`, and the whole chain
   * verifies (which proves each `prev_hash` is its predecessor's hash).
   */
  async evidence(id: string): Promise<TaskEvidenceDto> {
    const task = await this.get(id);
    const stored = await this.audit.forTask(id);
    // Checked as stored; answered readable (data nested past what JSON serialises was placed by hand).
    const altered = stored.find(({ hash, prev_hash: prevHash, ...body }) => verifiedChainHash(prevHash, body) !== hash);
    const events = stored.map(readableRecord);
    const verification = await this.freshWalk();
    let reason: string | undefined;
    if (altered) reason = `event ${altered.seq} does not match its hash`;
    else if (!verification.valid) reason = `the audit chain does not verify from event ${verification.first_invalid_seq}: ${verification.reason}`;
    return {
      task,
      events,
      chain: {
        first_seq: events[0]?.seq ?? null,
        last_seq: events[events.length - 1]?.seq ?? null,
        verified: !reason,
        ...(reason ? { reason } : {}),
      },
    };
  }
}
