import type { Pool } from 'pg';
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
export async function benchAudit(env: BenchEnvironment, seconds: number): Promise<{ rows: AuditBenchRow[]; chain: unknown; synchronous_commit: string }> {
  const pool: Pool = env.runtime.pool;
  const audit = new AuditService(pool);
  await pool.query('CREATE TABLE IF NOT EXISTS bench_baseline (id bigserial PRIMARY KEY, data jsonb NOT NULL)');
  const { rows: setting } = await pool.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
  const before = (await audit.verify()).events;
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
  const chain = await audit.verify();
  if (!chain.valid || chain.events !== before + acknowledged) {
    throw new Error(`audit chain check failed after the benchmark: ${JSON.stringify(chain)} (expected ${before + acknowledged} events)`);
  }
  return { rows, chain, synchronous_commit: setting[0].synchronous_commit };
}
