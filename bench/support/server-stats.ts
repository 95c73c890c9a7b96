import { performance } from 'node:perf_hooks';
import type { Pool } from 'pg';
import type { BenchServerStats } from './bench-server';

/** This process's cumulative counters (event loop, CPU), the cluster's next transaction id and its WAL counters. */
export async function serverStats(pool: Pool): Promise<BenchServerStats> {
  const { rows } = await pool.query<{ commits: string; wal_bytes: string; wal_fpi: string }>(
    `SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS commits, wal_bytes::text, wal_fpi::text FROM pg_stat_wal`,
  );
  const cpu = process.cpuUsage();
  return {
    type: 'stats',
    elu: performance.eventLoopUtilization(),
    xactCommit: Number(rows[0].commits),
    walBytes: Number(rows[0].wal_bytes),
    walFullPageImages: Number(rows[0].wal_fpi),
    cpuUs: cpu.user + cpu.system,
  };
}

/**
 * Answers the parent bench process: `stats` with {@link serverStats}, `stop` by running `stop`
 * and exiting 0.
 */
export function serveParent(pool: Pool, stop: () => Promise<void>): void {
  process.on(
    'message',
    (message: unknown) =>
      void (async () => {
        if (message === 'stop') {
          await stop();
          process.exit(0);
        }
        if ((message as { type?: string }).type === 'stats') process.send!(await serverStats(pool));
      })(),
  );
}
