import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { benchAudit } from './audit.bench';
import { benchAuditVerify } from './audit-verify.bench';
import { benchGateway } from './gateway.bench';
import { benchPolicy } from './policy.bench';
import { startBenchEnvironment } from './support/bench-environment';
import { LoadResult } from './support/load';
import { forkReady, startBenchServer, stopChild } from './support/start-bench-server';
import { benchTokenExchange } from './token-exchange.bench';

/**
 * `npm run bench`: each benchmark runs beside its own baseline in the same process and
 * reports ratios, not absolute timings alone. Prints a table and writes JSON to bench/results/.
 * `WRIT_BENCH_SECONDS` sets each load phase's duration (default 10).
 */
async function main(): Promise<void> {
  const seconds = Number(process.env.WRIT_BENCH_SECONDS ?? 10);
  // WRIT_BENCH_ONLY=policy,exchange,gateway,audit,verify runs a subset (default: all).
  const only = new Set((process.env.WRIT_BENCH_ONLY ?? 'policy,exchange,gateway,audit,verify').split(','));
  const results: Record<string, unknown> = { started_at: new Date().toISOString(), node: process.version, cpus: cpus().length };

  if (only.has('policy')) results.policy = await benchPolicy();
  if (only.has('exchange') || only.has('gateway')) {
    const upstream = await forkReady<{ url: string }>('upstream-server.js', ['14020']);
    const server = await startBenchServer(14_000, upstream.message.url).catch(async (error: unknown) => {
      await stopChild(upstream.child);
      throw error;
    });
    try {
      if (only.has('exchange')) results.token_exchange = await benchTokenExchange(server, { durationSeconds: seconds });
      if (only.has('gateway')) results.gateway = await benchGateway(server, upstream.message.url, { durationSeconds: seconds });
    } finally {
      await server.stop();
      await stopChild(upstream.child);
    }
  }
  if (only.has('verify')) {
    // WRIT_BENCH_AUDIT_EVENTS (default 100000): the log walked during the load.
    process.env.WRIT_BENCH_AUDIT_EVENTS ??= '100000';
    const server = await startBenchServer(14_030);
    try {
      const rate = Number(process.env.WRIT_BENCH_VERIFY_RATE ?? 100);
      results.audit_verify = await benchAuditVerify(server, { durationSeconds: seconds, rate });
    } finally {
      await server.stop();
    }
  }
  if (only.has('audit')) {
    const env = await startBenchEnvironment({ auth: 14_010, gateway: 14_011, admin: 14_012 });
    try {
      results.audit = await benchAudit(env, Math.max(2, Math.round(seconds / 2)));
    } finally {
      await env.close();
    }
  }
  report(results);
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `bench-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(results, null, 2));
  console.log(`results written to ${file}`);
}

function report(results: Record<string, unknown>): void {
  const exchange = results.token_exchange as Awaited<ReturnType<typeof benchTokenExchange>> | undefined;
  const gateway = results.gateway as Awaited<ReturnType<typeof benchGateway>> | undefined;
  const audit = results.audit as Awaited<ReturnType<typeof benchAudit>> | undefined;
  const policy = results.policy as Awaited<ReturnType<typeof benchPolicy>> | undefined;
  const verify = results.audit_verify as Awaited<ReturnType<typeof benchAuditVerify>> | undefined;
  const rows: Array<[string, LoadResult]> = [];
  if (exchange) {
    rows.push(['trivial endpoint (baseline)', exchange.baseline_trivial_endpoint], ['token exchange (max)', exchange.token_exchange]);
    rows.push([`token exchange @ ${exchange.token_exchange_at_half_load.target_rate}/s`, exchange.token_exchange_at_half_load]);
  }
  if (gateway) {
    rows.push(['upstream read, direct (baseline)', gateway.direct_upstream], ['upstream read, through the gateway', gateway.through_gateway]);
    rows.push([`upstream read, direct @ ${gateway.direct_at_rate.target_rate}/s`, gateway.direct_at_rate]);
    rows.push([`upstream read, gateway @ ${gateway.gateway_at_rate.target_rate}/s`, gateway.gateway_at_rate]);
  }
  if (verify) {
    rows.push([`exchange @ ${verify.rate}/s`, verify.without_verification], [`exchange @ ${verify.rate}/s, full verify`, verify.during_full_verification]);
  }
  if (rows.length) console.log('\nbenchmark                               req/s      p50 ms   p99 ms   non-2xx');
  for (const [name, row] of rows) {
    console.log(
      `${name.padEnd(38)} ${row.requestsPerSecond.toFixed(0).padStart(8)} ${row.p50Ms.toFixed(2).padStart(9)} ${row.p99Ms.toFixed(2).padStart(8)} ${String(row.non2xx).padStart(9)}`,
    );
  }
  if (exchange)
    console.log(
      `ratio token exchange / trivial endpoint: ${exchange.ratio_exchange_to_trivial.toFixed(3)} (target ${exchange.targets.exchanges_per_second}/s)`,
    );
  if (gateway)
    console.log(
      `gateway: added p50 at ${gateway.gateway_at_rate.target_rate}/s ${gateway.added_p50_ms.toFixed(2)} ms (target ≤ 1), throughput ratio ${gateway.throughput_ratio.toFixed(3)} (target ≥ 0.4)`,
    );
  if (verify)
    console.log(
      `full verification of ${verify.audit_events} events: ${verify.verification_ms} ms, valid ${verify.verification_valid}; exchange p99 during / without: ${verify.ratio_p99.toFixed(2)} (target ≤ ${verify.target_ratio_p99})`,
    );
  if (policy)
    console.log(
      `policy evaluation: p50 ${policy.p50_us.toFixed(1)} µs, p99 ${policy.p99_us.toFixed(1)} µs (target p99 ≤ ${policy.target_p99_us}); ${policy.ratio_p50_to_baseline.toFixed(1)}× a JSON round trip of its input`,
    );
  if (audit) {
    console.log(`\naudit (synchronous_commit ${audit.synchronous_commit})   events/s   baseline commits/s   ratio`);
    for (const row of audit.rows) {
      console.log(
        `${String(row.writers).padStart(3)} writers                       ${row.events_per_second.toFixed(0).padStart(8)} ${row.baseline_single_insert_commits_per_second.toFixed(0).padStart(20)} ${row.ratio_to_baseline.toFixed(2).padStart(7)}`,
      );
    }
    console.log(`chain after the run: ${JSON.stringify(audit.chain)}`);
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('bench failed:', error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
