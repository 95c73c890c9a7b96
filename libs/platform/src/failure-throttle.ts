import { Inject, Injectable, OnModuleDestroy, Optional } from '@nestjs/common';
import type { Request } from 'express';
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import type { Pool } from 'pg';
import { AuditEventInput, AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { PG_POOL } from '@writ/database';
import type { WritMetrics } from './metrics';
import { LOGGER, RUNTIME } from './runtime.module';

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
  window_start: Date;
}

/** A source this instance knows to be past its limit, until its window ends. */
interface Block {
  /** `Date.now()` at which the window ends. */
  until: number;
  /** The window (as PostgreSQL started it) its refusals are counted in. */
  windowStart: Date;
  windowSeconds: number;
}

/** Refusals of blocked sources answered from memory, not yet added to their window's row. */
interface PendingCount {
  key: string;
  windowStart: Date;
  windowSeconds: number;
  count: number;
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
/** How often refusals counted in memory are added to their rows (one statement for all of them). */
const FLUSH_EVERY_MS = 1000;
/**
 * How long after its end a window is left unsummarised, so that every instance has flushed the
 * refusals it counted in memory for it (every {@link FLUSH_EVERY_MS}) and its summary is exact.
 */
export const SUMMARY_GRACE_SECONDS = 10;
/** Most (source, window) refusal counts held in memory; past it they are flushed at once. */
const MAX_PENDING = 10_000;

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
 * nothing.
 *
 * A blocked source costs no database work per request: once an upsert tells an instance that a
 * source is past its limit (another instance learns it from its own first upsert for that source),
 * the instance refuses it from memory until the window ends, and counts those refusals in memory,
 * adding them to the window's row in one statement every {@link FLUSH_EVERY_MS} and on shutdown.
 * Concurrent failures of one source on one instance wait for the upsert already under way, so a
 * burst from a source this instance has not yet seen blocked costs one upsert, not one per request.
 * Otherwise a blocked address's flood would queue one row update each on the database that every
 * other caller needs.
 *
 * Anonymous failures are audited one event each only up to `WRIT_THROTTLE_AUDIT_EVENTS` per
 * source and window; the rest are counted, and once the window has ended (and
 * {@link SUMMARY_GRACE_SECONDS} more, for every instance's counts to be flushed) one
 * `throttle.summary` event per counter records its total, so an anonymous caller cannot grow
 * the audit log without bound. Refusals answered from memory are never audited one by one and
 * are all in the summary's `not_recorded_individually`. The totals are exact except for an
 * instance that dies (or cannot reach the database for longer than the grace) with counts not
 * yet flushed: at most {@link FLUSH_EVERY_MS} of its refusals are lost, or, flushed late, are
 * summarised in a second `throttle.summary` of the same window.
 */
@Injectable()
export class FailureThrottle implements OnModuleDestroy {
  private readonly blocked = new Map<string, Block>();
  /** Upserts under way, per source key (a burst from one source waits for the one under way). */
  private readonly counting = new Map<string, Promise<unknown>>();
  private readonly pending = new Map<string, PendingCount>();
  private readonly timer: NodeJS.Timeout;
  private readonly flushTimer: NodeJS.Timeout;
  private summarising: Promise<void> | undefined;
  private flushing: Promise<void> | undefined;
  private readonly metrics: WritMetrics | undefined;
  private readonly untrack: (() => void) | undefined;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    @Optional() @Inject(RUNTIME) runtime?: { metrics?: WritMetrics },
  ) {
    this.metrics = runtime?.metrics;
    this.untrack = this.metrics?.trackThrottle(() => this.blockedPerScope());
    const every = Math.min(this.config.throttle.windowSeconds, 30) * 1000;
    this.timer = setInterval(() => void this.summariseInBackground(), every);
    this.timer.unref();
    this.flushTimer = setInterval(() => void this.flush().catch(() => undefined), FLUSH_EVERY_MS);
    this.flushTimer.unref();
  }

  /**
   * For a source this instance knows to be past its limit in the current window: counts this
   * request as one more failure (in memory) and returns the (limited) verdict, so the caller
   * answers `429` without doing the work. `undefined` otherwise. Never touches the database.
   */
  refuseIfBlocked(scope: ThrottleScope, source: string): Promise<FailureVerdict | undefined> {
    return Promise.resolve(this.refuseFromMemory(this.sourceKey(scope, source)));
  }

  /** Counts one failure of `source` (and of the claimed `clientId`, if any) and says what to do with it. */
  async failure(scope: ThrottleScope, source: string, clientId?: string): Promise<FailureVerdict> {
    const { windowSeconds, sourceFailures, clientFailures, auditEvents } = this.config.throttle;
    const sourceKey = this.sourceKey(scope, source);
    // One upsert per source at a time on this instance: the others of a burst wait for it, and
    // are refused from memory once it has found the source blocked. When it fails, they fail
    // with it (503): each trying again in turn would hold the k-th request k times the
    // database's timeout, and queue the burst's upserts long after its callers gave up.
    for (;;) {
      const known = this.refuseFromMemory(sourceKey);
      if (known) return known;
      const under = this.counting.get(sourceKey);
      if (!under) break;
      await under;
    }
    const keys = clientId ? [sourceKey, `${scope}|client|${printable(clientId)}`] : [sourceKey];
    // One atomic statement per failure, correct across instances: the window is PostgreSQL's clock.
    const counted = this.pool.query<CounterRow>(
      `WITH w AS (SELECT to_timestamp(floor(extract(epoch FROM now()) / $2) * $2) AS start)
       INSERT INTO throttle_failures AS t (key, window_start, window_seconds, count, suppressed)
       SELECT k, w.start, $2, 1, 0 FROM unnest($1::text[]) AS k, w
       ON CONFLICT (key, window_start) DO UPDATE
          SET count = t.count + 1,
              suppressed = t.suppressed + CASE WHEN t.count + 1 > $3 THEN 1 ELSE 0 END
       RETURNING key, count, t.window_start,
                 extract(epoch FROM (t.window_start + make_interval(secs => $2) - now()))::float8 AS remaining`,
      [keys, windowSeconds, auditEvents],
    );
    this.counting.set(sourceKey, counted);
    let rows: CounterRow[];
    try {
      rows = (await counted).rows;
    } finally {
      if (this.counting.get(sourceKey) === counted) this.counting.delete(sourceKey);
    }
    const byKey = new Map(rows.map((row) => [row.key, row]));
    const sourceRow = byKey.get(sourceKey)!;
    const clientRow = keys[1] ? byKey.get(keys[1]) : undefined;
    const retryAfterSeconds = Math.max(1, Math.ceil(Number(sourceRow.remaining)));
    const sourceLimited = sourceRow.count > sourceFailures;
    if (sourceLimited) this.block(sourceKey, { until: Date.now() + Number(sourceRow.remaining) * 1000, windowStart: sourceRow.window_start, windowSeconds });
    return {
      limited: sourceLimited || (clientRow !== undefined && clientRow.count > clientFailures),
      retryAfterSeconds,
      audit: sourceRow.count <= auditEvents,
    };
  }

  /**
   * Adds the refusals counted in memory to their windows' rows, in one statement (the rows may
   * have been summarised already if this is late: the counts then start a row of their own,
   * summarised in turn). Runs every {@link FLUSH_EVERY_MS}, before each summary and on
   * shutdown; exposed for tests. On failure the counts are kept for the next attempt.
   */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing.catch(() => undefined);
    if (this.pending.size === 0) return;
    const batch = [...this.pending.values()];
    this.pending.clear();
    this.flushing = this.pool
      .query(
        `INSERT INTO throttle_failures AS t (key, window_start, window_seconds, count, suppressed)
         SELECT k, s, w, c, c FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::int[]) AS u(k, s, w, c)
         ON CONFLICT (key, window_start) DO UPDATE
            SET count = t.count + excluded.count, suppressed = t.suppressed + excluded.suppressed`,
        [batch.map((p) => p.key), batch.map((p) => p.windowStart), batch.map((p) => p.windowSeconds), batch.map((p) => p.count)],
      )
      .then(() => undefined)
      .catch((error: unknown) => {
        this.metrics?.throttleFlushFailed();
        for (const entry of batch) this.addPending(entry.key, entry, entry.count);
        this.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not record throttled refusals; will retry');
        throw error;
      })
      .finally(() => (this.flushing = undefined));
    await this.flushing;
  }

  /**
   * Writes one `throttle.summary` event for every ended window whose failures were not all
   * audited one by one, and deletes the ended windows, in one transaction (so a window is
   * summarised exactly once, whichever instance gets to it). Runs by itself every
   * `min(window, 30 s)`; exposed for tests and shutdown.
   */
  async summariseEndedWindows(): Promise<number> {
    await this.flush();
    // Cheap look first: the audit transaction (which locks the chain head) only when there is work.
    const ended = await this.pool.query(
      `SELECT 1 FROM throttle_failures WHERE window_start + make_interval(secs => window_seconds + ${SUMMARY_GRACE_SECONDS}) <= now() LIMIT 1`,
    );
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
                   WHERE window_start + make_interval(secs => window_seconds + ${SUMMARY_GRACE_SECONDS}) <= now()
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

  /** Stops the background summaries (waiting for one under way) and flushes the refusals counted in memory. */
  async onModuleDestroy(): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.flushTimer);
    await this.summarising;
    await this.flush().catch(() => undefined);
    this.untrack?.();
  }

  /** The sources held as blocked whose window has not ended, per scope (for `writ_throttle_blocked_sources`). */
  private blockedPerScope(): ReadonlyMap<string, number> {
    const now = Date.now();
    const held = new Map<string, number>();
    for (const [key, block] of this.blocked) {
      if (block.until <= now) continue;
      const scope = key.slice(0, key.indexOf('|'));
      held.set(scope, (held.get(scope) ?? 0) + 1);
    }
    return held;
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

  private block(key: string, block: Block): void {
    if (this.blocked.size >= MAX_LOCAL_BLOCKS) this.blocked.clear();
    this.blocked.set(key, block);
  }

  /** The verdict for a source known blocked (its refusal counted in memory), or `undefined`. */
  private refuseFromMemory(key: string): FailureVerdict | undefined {
    const block = this.blocked.get(key);
    if (!block) return undefined;
    const left = block.until - Date.now();
    if (left <= 0) {
      this.blocked.delete(key);
      return undefined;
    }
    this.addPending(key, block, 1);
    this.metrics?.throttleRefusedFromMemory(key.slice(0, key.indexOf('|')) as ThrottleScope);
    return { limited: true, retryAfterSeconds: Math.max(1, Math.ceil(left / 1000)), audit: false };
  }

  private addPending(key: string, window: Pick<Block, 'windowStart' | 'windowSeconds'>, count: number): void {
    const id = `${key}\u0000${window.windowStart.getTime()}`;
    const entry = this.pending.get(id);
    if (entry) {
      entry.count += count;
      return;
    }
    this.pending.set(id, { key, windowStart: window.windowStart, windowSeconds: window.windowSeconds, count });
    if (this.pending.size >= MAX_PENDING) void this.flush().catch(() => undefined);
  }
}
