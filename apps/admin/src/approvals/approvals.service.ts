import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { AuditService } from '@writ/audit';
import { ApprovalDto, ApprovalStore, RowIntegrity } from '@writ/grants';
import { PG_POOL } from '@writ/database';
import { ConflictError, isPositionInstant, isUuid, NotFoundError } from '@writ/platform';
import { adminChange } from '../auth/admin-change';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { decodeCursor, encodeCursor, Page } from '../common/cursor';
import { DEFAULT_PAGE_SIZE } from '../common/page-query.dto';
import type { ListApprovalsQueryDto } from './dto/approval.dtos';

/**
 * Shape check of an approval list cursor `{at: requested_at, id}`: `at` is the exact instant of
 * the position, to the microsecond (a cursor from before, to the millisecond, is still read),
 * checked as a real date before it reaches PostgreSQL.
 */
function isApprovalCursor(value: unknown): value is { at: string; id: string } {
  const cursor = value as { at?: unknown; id?: unknown } | null;
  return typeof cursor === 'object' && cursor !== null && isPositionInstant(cursor.at) && isUuid(cursor.id);
}

/** Human approvals of risky grants: list, read, approve, deny. */
@Injectable()
export class ApprovalsService {
  private readonly store: ApprovalStore;

  constructor(@Inject(PG_POOL) pool: Pool, audit: AuditService, integrity: RowIntegrity) {
    this.store = new ApprovalStore(pool, audit, integrity);
  }

  /** Approvals, newest first. */
  async list(query: ListApprovalsQueryDto): Promise<Page<ApprovalDto>> {
    const cursor = decodeCursor(query.cursor, isApprovalCursor);
    const page = await this.store.list(
      { status: query.status, taskId: query.task_id },
      { limit: query.limit ?? DEFAULT_PAGE_SIZE, before: cursor ? { at: cursor.at, id: cursor.id } : undefined },
    );
    return { items: page.items, next_cursor: page.next ? encodeCursor({ at: page.next.at, id: page.next.id }) : null };
  }

  /** One approval. */
  async get(id: string): Promise<ApprovalDto> {
    const approval = await this.store.get(id);
    if (!approval) throw new NotFoundError('approval');
    return approval;
  }

  /**
   * Approves or denies a pending approval; `409` when it is no longer pending. Decided only while
   * the admin token that asked is still valid, checked in the deciding transaction (`401`, nothing
   * decided, once its revocation committed): a decision buys a credential.
   */
  async decide(admin: AdminPrincipal, id: string, decision: 'approved' | 'denied', note: string | undefined): Promise<ApprovalDto> {
    const stillValid = adminChange(admin, async () => undefined);
    const { approval, changed } = await this.store.decide(id, decision, adminActor(admin), note ?? null, stillValid);
    if (!approval) throw new NotFoundError('approval');
    if (!changed) throw new ConflictError(`approval ${id} is ${approval.status}, not pending`);
    return approval;
  }
}
