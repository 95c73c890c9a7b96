import { Inject, Injectable } from '@nestjs/common';
import { AuditQuery, AuditRecord, AuditService, AuditVerification, readableRecord } from '@writ/audit';
import { WRIT_CONFIG, type WritConfig } from '@writ/config';
import { MasterKey } from '@writ/keys';
import { ValidationFailedError } from '@writ/platform';
import { AdminThrottledError } from '../auth/admin-auth.errors';
import { AdminAuthenticator } from '../auth/admin-authenticator';
import type { AdminPrincipal } from '../auth/admin-principal';
import { roleSatisfies } from '../auth/admin-role';
import { decodeCursor, encodeCursor, Page } from '../common/cursor';
import { PageQueryDto, DEFAULT_PAGE_SIZE } from '../common/page-query.dto';
import type { AuditCheckpointPageDto } from './dto/audit-checkpoint.dto';
import type { AuditHashDto } from './dto/audit-query.dto';
import { AuditFilterQueryDto, AuditListQueryDto, DEFAULT_AUDIT_PAGE } from './dto/audit-query.dto';

/** Least time between two full verifications on one instance. */
export const FULL_VERIFY_INTERVAL_MS = 60_000;

function isSeqCursor(value: unknown): value is { s: number } {
  const seq = (value as { s?: unknown } | null)?.s;
  return typeof seq === 'number' && Number.isSafeInteger(seq) && seq > 0;
}

const TIME_ZONE = /(?:Z|[+-]\d{2}(?::?\d{2})?)$/i;
/** The date forms JavaScript reads as ISO 8601 (in UTC): `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, then maybe a time. */
const CALENDAR_DATE = /^\d{4}(?:-\d{2}(?:-\d{2})?)?(?:T|$)/i;

/**
 * A filter's instant, or why it is not one. A date and time must carry its offset (`Z` or
 * `±hh:mm`): without one, JavaScript reads it in the server's local zone, so the same query
 * would select other events on a server in another zone. A bare date is midnight UTC. An
 * ordinal date (`2025-012`, 12 January), which the ISO 8601 check accepts, is refused:
 * JavaScript misreads it as a month in the local zone (1 December). Events
 * are stored to the millisecond: finer digits round up, so that `since` and `until` keep
 * exactly the events at or after, and before, the instant given (truncating them would drop
 * from an export the events of the millisecond before `until`).
 */
export function parseInstant(text: string): Date | string {
  if (!CALENDAR_DATE.test(text)) return 'must be a calendar date (YYYY-MM-DD), maybe with a time, e.g. 2025-01-31T12:00:00Z';
  if (text.includes('T') && !TIME_ZONE.test(text)) return 'must give its time zone offset (Z or ±hh:mm), e.g. 2025-01-31T12:00:00Z';
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return 'is not a valid time';
  const fraction = /[.,](\d+)/.exec(text)?.[1] ?? '';
  return /[1-9]/.test(fraction.slice(3)) ? new Date(date.getTime() + 1) : date;
}

/** Reads, exports and verifies the audit chain; hashes values the way events store them. */
@Injectable()
export class AuditLogService {
  constructor(
    private readonly audit: AuditService,
    private readonly master: MasterKey,
    private readonly authenticator: AdminAuthenticator,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
  ) {}

  /** A page of events, newest first. */
  async list(query: AuditListQueryDto): Promise<Page<AuditRecord>> {
    const after = decodeCursor(query.cursor, isSeqCursor);
    const limit = query.limit ?? DEFAULT_AUDIT_PAGE;
    const page = await this.audit.list(this.filters(query), { limit, after: after?.s });
    return { items: page.items.map(readableRecord), next_cursor: page.nextCursor === null ? null : encodeCursor({ s: page.nextCursor }) };
  }

  /** Every matching event, oldest first (read in pages, never all in memory). */
  export(query: AuditFilterQueryDto): AsyncGenerator<AuditRecord> {
    return this.audit.stream(this.filters(query));
  }

  private lastFullVerify = 0;
  private verifying: Promise<AuditVerification> | undefined;

  /**
   * Verifies the chain. Incremental by default (the cost is what was appended since the last
   * verified checkpoint); concurrent callers share one walk. A full walk is an admin's explicit
   * action, at most one per {@link FULL_VERIFY_INTERVAL_MS} on this instance (`429` otherwise):
   * its cost grows with the whole log (or use `npm run audit:verify` away from the services).
   */
  async verify(principal: AdminPrincipal, full = false): Promise<AuditVerification> {
    if (!full) return (this.verifying ??= this.audit.verify({ incremental: true }).finally(() => (this.verifying = undefined)));
    if (!roleSatisfies(principal.role, 'admin')) {
      await this.authenticator.forbid(principal, 'admin', { method: 'GET', path: '/v1/audit/verify?full=true' }, 'a full verification needs the role admin');
    }
    const wait = this.lastFullVerify + FULL_VERIFY_INTERVAL_MS - Date.now();
    if (wait > 0) {
      const seconds = Math.ceil(wait / 1000);
      throw new AdminThrottledError(seconds, `a full verification runs at most once a minute; retry after ${seconds} s (or run npm run audit:verify)`);
    }
    this.lastFullVerify = Date.now();
    return this.audit.verify();
  }

  /** The checkpoint verification key and a page of checkpoints, newest first. */
  async checkpoints(query: PageQueryDto): Promise<AuditCheckpointPageDto> {
    const after = decodeCursor(query.cursor, isSeqCursor);
    const page = await this.audit.checkpoints({ limit: query.limit ?? DEFAULT_PAGE_SIZE, before: after?.s });
    return {
      public_key: this.master.checkpointSigningKey().publicJwk,
      previous_public_keys: this.master.checkpointPublicKeys(this.config.auditCheckpointPublicKeys).slice(1),
      items: page.items,
      next_cursor: page.nextCursor === null ? null : encodeCursor({ s: page.nextCursor }),
    };
  }

  /**
   * The keyed hash (HMAC-SHA256 under a key derived from the master key) of a value, and its
   * hashes under the previous master keys (events recorded before a rotation).
   */
  hash(value: string): AuditHashDto {
    const [hash, ...previous] = this.master.auditHmacs(value);
    return { hash, algorithm: 'hmac-sha256', previous_hashes: previous };
  }

  /** The service's query from validated filters (`400` when `until` is not after `since`). */
  filters(query: AuditFilterQueryDto): AuditQuery {
    const problems: Array<{ field: string; message: string }> = [];
    const instant = (field: 'since' | 'until', text: string | undefined): Date | undefined => {
      if (text === undefined) return undefined;
      const parsed = parseInstant(text);
      if (typeof parsed === 'string') problems.push({ field, message: parsed });
      return typeof parsed === 'string' ? undefined : parsed;
    };
    const since = instant('since', query.since);
    const until = instant('until', query.until);
    if (problems.length === 0 && since && until && until.getTime() <= since.getTime()) {
      problems.push({ field: 'until', message: 'must be after since' });
    }
    if (problems.length > 0) throw new ValidationFailedError(problems, 'the query is invalid');
    return {
      agentId: query.agent_id,
      taskId: query.task_id,
      connectorId: query.connector,
      type: query.type,
      outcome: query.outcome,
      since,
      until,
    };
  }
}
