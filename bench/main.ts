import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { benchAudit } from './audit.bench';
import { startBenchEnvironment } from './support/bench-environment';
import { benchTokenExchange } from './token-exchange.bench';

/**
 * `npm run bench`: each benchmark runs beside its own baseline in the same process and
 * reports ratios, not absolute timings alone. Prints a table and writes JSON to bench/results/.
 * `WRIT_BENCH_SECONDS` sets each load phase's duration (default 10).
 */
async function main(): Promise<void> {
  const seconds = Number(process.env.WRIT_BENCH_SECONDS ?? 10);
  const results: Record<string, unknown> = { started_at: new Date().toISOString(), node: process.version, cpus: (await import('node:os')).cpus().length };
  const exchange = await benchTokenExchange({ durationSeconds: seconds, port: 14_000 });
  results.token_exchange = exchange;
  const env = await startBenchEnvironment({ auth: 14_010, gateway: 14_011, admin: 14_012 });
  try {
    results.audit = await benchAudit(env, Math.max(2, Math.round(seconds / 2)));
  } finally {
    await env.close();
  }
  const audit = results.audit as Awaited<ReturnType<typeof benchAudit>>;
  const rows = [
    ['trivial endpoint (baseline)', exchange.baseline_trivial_endpoint],
    ['token exchange (max)', exchange.token_exchange],
    [`token exchange @ ${exchange.token_exchange_at_half_load.target_rate}/s`, exchange.token_exchange_at_half_load],
  ] as const;
  console.log('\nbenchmark                               req/s      p50 ms   p99 ms   non-2xx');
  for (const [name, row] of rows) {
    console.log(`${name.padEnd(38)} ${row.requestsPerSecond.toFixed(0).padStart(8)} ${row.p50Ms.toFixed(2).padStart(9)} ${row.p99Ms.toFixed(2).padStart(8)} ${String(row.non2xx).padStart(9)}`);
  }
  console.log(`ratio token exchange / trivial endpoint: ${exchange.ratio_exchange_to_trivial.toFixed(3)}`);
  console.log(`\naudit (synchronous_commit ${audit.synchronous_commit})   events/s   baseline commits/s   ratio`);
  for (const row of audit.rows) {
    console.log(`${String(row.writers).padStart(3)} writers                       ${row.events_per_second.toFixed(0).padStart(8)} ${row.baseline_single_insert_commits_per_second.toFixed(0).padStart(20)} ${row.ratio_to_baseline.toFixed(2).padStart(7)}`);
  }
  console.log(`chain after the run: ${JSON.stringify(audit.chain)}`);
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `bench-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(results, null, 2));
  console.log(`results written to ${file}`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('bench failed:', error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
