import { Pool } from 'pg';
import { AuditService } from '@writ/audit';
import type { BenchEnvironment } from './support/bench-environment';

/** One concurrency level of the audit benchmark. */
export interface AuditBenchRow {
  writers: number;
  events_per_second: number;
  baseline_single_insert_commits_per_second: number;
  ratio_to_baseline: number;
  acknowledged: number;
}

async function loop(seconds: number, work: () => Promise<unknown>): Promise<number> {
  const until = Date.now() + seconds * 1000;
  let count = 0;
  while (Date.now() < until) {
    await work();
    count += 1;
  }
  return count;
}

async function measure(writers: number, seconds: number, work: () => Promise<unknown>): Promise<{ perSecond: number; total: number }> {
  const started = process.hrtime.bigint();
  const counts = await Promise.all(Array.from({ length: writers }, () => loop(seconds, work)));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const total = counts.reduce((sum, count) => sum + count, 0);
  return { perSecond: total / elapsed, total };
}

/**
 * Audit throughput with 1, 10 and 50 concurrent writers (synchronous_commit on), beside a
 * baseline in the same run: the same writers each committing one plain INSERT per event.
 * Afterwards the chain is verified: no event lost, none forked.
 */
export async function benchAudit(
  env: BenchEnvironment,
  seconds: number,
): Promise<{ rows: AuditBenchRow[]; log_size: LogSizeRow[]; chain: unknown; synchronous_commit: string }> {
  const pool: Pool = env.runtime.pool;
  const audit = new AuditService(pool);
  await pool.query('CREATE TABLE IF NOT EXISTS bench_baseline (id bigserial PRIMARY KEY, data jsonb NOT NULL)');
  const { rows: setting } = await pool.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
  // Verified by the runtime's service, which holds the checkpoint keys (its checkpointer signs as the log grows).
  const before = (await env.runtime.audit.verify()).events;
  const event = {
    type: 'bench.event',
    outcome: 'success' as const,
    actor: { type: 'system' as const, id: 'bench' },
    agentId: 'bench-agent',
    data: { operation: 'payouts.create', status: 201, latency_ms: 12 },
  };
  const rows: AuditBenchRow[] = [];
  let acknowledged = 0;
  for (const writers of [1, 10, 50]) {
    const baseline = await measure(writers, seconds, () => pool.query('INSERT INTO bench_baseline (data) VALUES ($1)', [event.data]));
    const chained = await measure(writers, seconds, () => audit.record(event));
    acknowledged += chained.total;
    rows.push({
      writers,
      events_per_second: chained.perSecond,
      baseline_single_insert_commits_per_second: baseline.perSecond,
      ratio_to_baseline: chained.perSecond / baseline.perSecond,
      acknowledged: chained.total,
    });
  }
  const growth = await benchLogSize(env, audit, event, seconds);
  acknowledged += growth.appended;
  const chain = await env.runtime.audit.verify();
  if (!chain.valid || chain.events !== before + acknowledged) {
    throw new Error(`audit chain check failed after the benchmark: ${JSON.stringify(chain)} (expected ${before + acknowledged} events)`);
  }
  return { rows, log_size: growth.rows, chain, synchronous_commit: setting[0].synchronous_commit };
}

/** Appending at {@link LOG_SIZE_WRITERS} writers on a log of `events_before` events, right after a checkpoint. */
export interface LogSizeRow {
  events_before: number;
  events_per_second: number;
  wal_bytes_per_event: number;
  /** Pages written whole to the WAL (their first change since the checkpoint) per event. */
  full_page_images_per_event: number;
}

const LOG_SIZE_WRITERS = 50;

/**
 * Whether appending costs more as the log grows (issue 11: an exchange's cost must not grow with
 * the size of the audit log): the same appends on the log as the rows above left it, then after
 * `WRIT_BENCH_AUDIT_PRIOR` more events (default 500 000, chained like any other), each phase
 * right after a `CHECKPOINT`. An index whose inserts land on random pages (a random UUID) writes
 * one full-page image per page it touches for the first time after a checkpoint, so the larger
 * the log, the more of them: that shows here as WAL per event.
 */
async function benchLogSize(
  env: BenchEnvironment,
  audit: AuditService,
  event: Parameters<AuditService['record']>[0],
  seconds: number,
): Promise<{ rows: LogSizeRow[]; appended: number }> {
  const prior = Number(process.env.WRIT_BENCH_AUDIT_PRIOR ?? 500_000);
  // CHECKPOINT needs a superuser (or pg_checkpoint); over an external database it is skipped.
  const superuser = env.superuserUrl ? new Pool({ connectionString: env.superuserUrl, max: 1 }) : undefined;
  const pool: Pool = env.runtime.pool;
  let appended = 0;
  const phase = async (): Promise<LogSizeRow> => {
    await superuser?.query('CHECKPOINT');
    const events = Number((await pool.query<{ seq: string }>('SELECT seq::text FROM audit_chain_head WHERE id = 1')).rows[0].seq);
    const wal = async () =>
      (await pool.query<{ bytes: string; fpi: string }>('SELECT wal_bytes::text AS bytes, wal_fpi::text AS fpi FROM pg_stat_wal')).rows[0];
    const before = await wal();
    const run = await measure(LOG_SIZE_WRITERS, seconds, () => audit.record(event));
    const after = await wal();
    appended += run.total;
    return {
      events_before: events,
      events_per_second: run.perSecond,
      wal_bytes_per_event: (Number(after.bytes) - Number(before.bytes)) / run.total,
      full_page_images_per_event: (Number(after.fpi) - Number(before.fpi)) / run.total,
    };
  };
  try {
    const rows = [await phase()];
    // The prior events, in batches of 1 000 concurrent appends (as writers would).
    for (let done = 0; done < prior; done += 1_000) {
      await Promise.all(Array.from({ length: Math.min(1_000, prior - done) }, () => audit.record(event)));
    }
    appended += prior;
    rows.push(await phase());
    return { rows, appended };
  } finally {
    await superuser?.end();
  }
}
