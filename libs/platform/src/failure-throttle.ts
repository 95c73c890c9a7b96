import { Inject, Injectable, OnModuleDestroy } from '@nestjs/common';
import type { Request } from 'express';
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import type { Pool } from 'pg';
import { AuditEventInput, AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { PG_POOL } from '@writ/database';
import { LOGGER } from './runtime.module';

/** Which service's failures are counted (each has its own counters). */
export type ThrottleScope = 'oauth' | 'admin' | 'gateway';

/** What to do with one failed request. */
export interface FailureVerdict {
  /** A limit is passed: answer `429` with `Retry-After` instead of the failure itself. */
  readonly limited: boolean;
  /** Seconds until the current window ends (at least 1). */
  readonly retryAfterSeconds: number;
  /**
   * Record this failure as its own audit event. `false` once the source has had
   * `WRIT_THROTTLE_AUDIT_EVENTS` of them in this window: it is then counted in the window's
   * one `throttle.summary` event instead.
   */
  readonly audit: boolean;
}

interface CounterRow {
  key: string;
  count: number;
  remaining: number;
}

interface EndedWindowRow {
  key: string;
  window_start: Date;
  window_seconds: number;
  count: number;
  suppressed: number;
}

/** Most keys remembered as blocked by one instance (an attacker's addresses cannot grow it without bound). */
const MAX_LOCAL_BLOCKS = 10_000;
/** Most ended windows summarised in one transaction. */
const SUMMARY_BATCH = 500;

/** `Sec-Fetch-Site` values a browser sends with a request another site's page made. */
const FOREIGN_SITES = new Set(['cross-site', 'same-site']);

/**
 * The caller's address as the socket sees it (no proxy headers are trusted): IPv4 as is
 * (IPv4-mapped IPv6 unwrapped), IPv6 as its /64 prefix (one host usually holds a whole /64, so
 * counting single IPv6 addresses would let it rotate through 2^64 of them). A request a browser
 * sent for another site's page (Fetch Metadata `Sec-Fetch-Site: cross-site` or `same-site`) is a
 * source of its own, `<address>#cross-site`: such a page, opened by anyone behind the address of
 * agents or orchestrators (a laptop, an office's NAT), would otherwise spend that address's
 * failure budget and have their requests refused with `429` too. No Writ client is a web page.
 * Sending the header by hand only picks the other counter, which has the same limits.
 */
export function sourceAddress(request: Pick<Request, 'socket' | 'headers'>): string {
  const address = networkAddress(request);
  return fromAnotherSite(request) ? `${address}#cross-site` : address;
}

/** Whether a browser sent `request` for another site's page (`Sec-Fetch-Site: cross-site` or `same-site`). */
export function fromAnotherSite(request: Pick<Request, 'headers'>): boolean {
  const site = request.headers?.['sec-fetch-site'];
  return typeof site === 'string' && FOREIGN_SITES.has(site.toLowerCase());
}

function networkAddress(request: Pick<Request, 'socket'>): string {
  const address = request.socket?.remoteAddress ?? 'unknown';
  if (address.startsWith('::ffff:') && isIPv4(address.slice(7))) return address.slice(7);
  if (!isIPv6(address)) return address;
  const [head, tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((group) => parseInt(group, 16).toString(16))
    .join(':')}::/64`;
}

function printable(value: string): string {
  return value.replace(/[^\x21-\x7e]/g, '?').slice(0, 128);
}

/**
 * Throttling of failed authentication, shared by every instance through PostgreSQL: each
 * failure adds one to a counter per (scope, source address) and per (scope, claimed client id)
 * for the current fixed window, in one atomic upsert. A source past
 * `WRIT_THROTTLE_SOURCE_FAILURES`, or a client id past `WRIT_THROTTLE_CLIENT_FAILURES`, gets
 * `429` for the rest of the window. Successful requests never reach this class, so they pay
 * nothing; a source this instance already saw over its limit is refused before any other work
 * (one counter update, no signature checks).
 *
 * Anonymous failures are audited one event each only up to `WRIT_THROTTLE_AUDIT_EVENTS` per
 * source and window; the rest are counted, and once the window has ended one
 * `throttle.summary` event per counter records its total, so an anonymous caller cannot grow
 * the audit log without bound.
 */
@Injectable()
export class FailureThrottle implements OnModuleDestroy {
  private readonly blocked = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;
  private summarising: Promise<void> | undefined;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {
    const every = Math.min(this.config.throttle.windowSeconds, 30) * 1000;
    this.timer = setInterval(() => void this.summariseInBackground(), every);
    this.timer.unref();
  }

  /**
   * For a source this instance already saw past its limit in the current window: counts this
   * request as one more failure and returns the (limited) verdict, so the caller answers `429`
   * without doing the work. `undefined` (and no database work) otherwise.
   */
  async refuseIfBlocked(scope: ThrottleScope, source: string): Promise<FailureVerdict | undefined> {
    const until = this.blocked.get(this.sourceKey(scope, source));
    if (until === undefined) return undefined;
    if (until <= Date.now()) {
      this.blocked.delete(this.sourceKey(scope, source));
      return undefined;
    }
    const verdict = await this.failure(scope, source);
    if (verdict.limited) return verdict;
    // PostgreSQL's window has moved on: this instance's memory was stale.
    this.blocked.delete(this.sourceKey(scope, source));
    return undefined;
  }

  /** Counts one failure of `source` (and of the claimed `clientId`, if any) and says what to do with it. */
  async failure(scope: ThrottleScope, source: string, clientId?: string): Promise<FailureVerdict> {
    const { windowSeconds, sourceFailures, clientFailures, auditEvents } = this.config.throttle;
    const sourceKey = this.sourceKey(scope, source);
    const keys = clientId ? [sourceKey, `${scope}|client|${printable(clientId)}`] : [sourceKey];
    // One atomic statement per failure, correct across instances: the window is PostgreSQL's clock.
    const { rows } = await this.pool.query<CounterRow>(
      `WITH w AS (SELECT to_timestamp(floor(extract(epoch FROM now()) / $2) * $2) AS start)
       INSERT INTO throttle_failures AS t (key, window_start, window_seconds, count, suppressed)
       SELECT k, w.start, $2, 1, 0 FROM unnest($1::text[]) AS k, w
       ON CONFLICT (key, window_start) DO UPDATE
          SET count = t.count + 1,
              suppressed = t.suppressed + CASE WHEN t.count + 1 > $3 THEN 1 ELSE 0 END
       RETURNING key, count, extract(epoch FROM (t.window_start + make_interval(secs => $2) - now()))::float8 AS remaining`,
      [keys, windowSeconds, auditEvents],
    );
    const byKey = new Map(rows.map((row) => [row.key, row]));
    const sourceRow = byKey.get(sourceKey)!;
    const clientRow = keys[1] ? byKey.get(keys[1]) : undefined;
    const retryAfterSeconds = Math.max(1, Math.ceil(Number(sourceRow.remaining)));
    const sourceLimited = sourceRow.count > sourceFailures;
    if (sourceLimited) this.block(sourceKey, retryAfterSeconds);
    return {
      limited: sourceLimited || (clientRow !== undefined && clientRow.count > clientFailures),
      retryAfterSeconds,
      audit: sourceRow.count <= auditEvents,
    };
  }

  /**
   * Writes one `throttle.summary` event for every ended window whose failures were not all
   * audited one by one, and deletes the ended windows, in one transaction (so a window is
   * summarised exactly once, whichever instance gets to it). Runs by itself every
   * `min(window, 30 s)`; exposed for tests and shutdown.
   */
  async summariseEndedWindows(): Promise<number> {
    // Cheap look first: the audit transaction (which locks the chain head) only when there is work.
    const ended = await this.pool.query(`SELECT 1 FROM throttle_failures WHERE window_start + make_interval(secs => window_seconds) <= now() LIMIT 1`);
    if (ended.rowCount === 0) return 0;
    let total = 0;
    for (;;) {
      const { result } = await this.audit.recordWith(
        async (client) =>
          (
            await client.query<EndedWindowRow>(
              `DELETE FROM throttle_failures
                WHERE (key, window_start) IN (
                  SELECT key, window_start FROM throttle_failures
                   WHERE window_start + make_interval(secs => window_seconds) <= now()
                   LIMIT ${SUMMARY_BATCH} FOR UPDATE SKIP LOCKED)
                RETURNING key, window_start, window_seconds, count, suppressed`,
            )
          ).rows,
        (ended) => ended.filter((row) => this.summarised(row)).map((row) => this.summaryEvent(row)),
      );
      total += result.filter((row) => this.summarised(row)).length;
      if (result.length < SUMMARY_BATCH) return total;
    }
  }

  /** Stops the background summaries (waiting for one under way). */
  async onModuleDestroy(): Promise<void> {
    clearInterval(this.timer);
    await this.summarising;
  }

  private summariseInBackground(): void {
    if (this.summarising) return;
    this.summarising = this.summariseEndedWindows()
      .then(() => undefined)
      .catch((error: unknown) =>
        this.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not summarise throttled failures; will retry'),
      )
      .finally(() => (this.summarising = undefined));
  }

  /** A source's window with failures not audited one by one, or a client id's window past its limit. */
  private summarised(row: EndedWindowRow): boolean {
    return row.key.split('|')[1] === 'client' ? row.count > this.config.throttle.clientFailures : row.suppressed > 0;
  }

  private summaryEvent(row: EndedWindowRow): AuditEventInput {
    const [scope, kind, ...subject] = row.key.split('|');
    const client = kind === 'client';
    return {
      type: 'throttle.summary',
      outcome: 'denied',
      actor: { type: 'anonymous', id: null },
      data: {
        scope,
        ...(client ? { client_id: subject.join('|') } : { source: subject.join('|'), not_recorded_individually: row.suppressed }),
        window_start: row.window_start.toISOString(),
        window_seconds: row.window_seconds,
        failures: row.count,
      },
    };
  }

  private sourceKey(scope: ThrottleScope, source: string): string {
    return `${scope}|source|${printable(source)}`;
  }

  private block(key: string, seconds: number): void {
    if (this.blocked.size >= MAX_LOCAL_BLOCKS) this.blocked.clear();
    this.blocked.set(key, Date.now() + seconds * 1000);
  }
}
