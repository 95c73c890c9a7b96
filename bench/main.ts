import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { benchAudit } from './audit.bench';
import { benchAuditVerify } from './audit-verify.bench';
import { benchGateway } from './gateway.bench';
import { benchPolicy } from './policy.bench';
import { benchScale } from './scale.bench';
import { startBenchEnvironment } from './support/bench-environment';
import { BENCH_PORTS } from './support/bench-ports';
import type { PhaseResult } from './support/phase';
import { forkReady, startBenchServer, stopChild } from './support/start-bench-server';
import { benchPeers } from './peers/peers.bench';
import { benchTokenExchange } from './token-exchange.bench';

/**
 * `npm run bench`: each benchmark runs beside its own baseline in the same process and
 * reports ratios, not absolute timings alone. Prints a table and writes JSON to bench/results/.
 * `WRIT_BENCH_SECONDS` sets each load phase's duration (default 10); `WRIT_BENCH_ROUNDS` the
 * alternated rounds of the exchange's and the gateway's comparisons with their baselines
 * (default 3; see `support/rounds.ts`).
 */
async function main(): Promise<void> {
  const seconds = Number(process.env.WRIT_BENCH_SECONDS ?? 10);
  const rounds = Number(process.env.WRIT_BENCH_ROUNDS ?? 3);
  if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError(`WRIT_BENCH_ROUNDS must be a positive integer, not ${process.env.WRIT_BENCH_ROUNDS}`);
  // WRIT_BENCH_ONLY=policy,exchange,gateway,scale,audit,verify,peers runs a subset (default: all).
  const only = new Set((process.env.WRIT_BENCH_ONLY ?? 'policy,exchange,gateway,scale,audit,verify,peers').split(','));
  const results: Record<string, unknown> = { started_at: new Date().toISOString(), node: process.version, cpus: cpus().length };

  if (only.has('policy')) results.policy = await benchPolicy();
  if (only.has('exchange') || only.has('gateway') || only.has('scale')) {
    const upstream = await forkReady<{ url: string }>('upstream-server.js', [String(BENCH_PORTS.upstream)]);
    const server = await startBenchServer(BENCH_PORTS.writ, upstream.message.url).catch(async (error: unknown) => {
      await stopChild(upstream.child);
      throw error;
    });
    results.ecdsa = server.ready.ecdsa;
    try {
      if (only.has('exchange')) results.token_exchange = await benchTokenExchange(server, { durationSeconds: seconds, rounds });
      if (only.has('gateway')) results.gateway = await benchGateway(server, { durationSeconds: seconds, rounds });
      // Two instances over one database against one (issue 11: how throughput scales).
      if (only.has('scale')) results.scale = await benchScale(server, { durationSeconds: seconds, port: BENCH_PORTS.secondInstance, cpus: cpus().length });
    } finally {
      await server.stop();
      await stopChild(upstream.child);
    }
  }
  // Peers (Keycloak, Hydra, OPA) run only when bench/peers/peers.sh installed and started them.
  if (only.has('peers')) results.peers = await benchPeers({ durationSeconds: seconds });
  if (only.has('audit')) {
    const env = await startBenchEnvironment(BENCH_PORTS.audit);
    try {
      results.audit = await benchAudit(env, Math.max(2, Math.round(seconds / 2)));
    } finally {
      await env.close();
    }
  }
  if (only.has('verify')) {
    // Issuance at a fixed rate, alone and during a full audit verification (issue 10).
    // WRIT_BENCH_AUDIT_EVENTS (default 100000): the log walked during the load.
    process.env.WRIT_BENCH_AUDIT_EVENTS ??= '100000';
    process.env.WRIT_BENCH_PRIOR_GRANTS ??= '0';
    // A verification that is not valid says why in the result; the service's own errors (an
    // altered event, a checkpoint not written) are printed too.
    process.env.WRIT_BENCH_LOG_LEVEL ??= 'error';
    const server = await startBenchServer(BENCH_PORTS.writ + 30);
    try {
      const rate = Number(process.env.WRIT_BENCH_VERIFY_RATE ?? 100);
      results.audit_verify = await benchAuditVerify(server, { durationSeconds: seconds, rate });
    } finally {
      await server.stop();
    }
  }
  const rows = report(results);
  const verify = results.audit_verify as Awaited<ReturnType<typeof benchAuditVerify>> | undefined;
  if (verify) {
    console.log(
      `full verification of ${verify.audit_events} events: ${verify.verification_ms} ms, valid ${verify.verification_valid}${verify.verification_valid ? '' : ` (HTTP ${verify.verification_status}: ${verify.verification_reason})`}; exchange p99 at ${verify.rate}/s during / without: ${verify.ratio_p99.toFixed(2)} (target ≤ ${verify.target_ratio_p99})`,
    );
  }
  const dir = join(__dirname, '..', '..', 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `bench-${Date.now()}.json`);
  await writeFile(file, JSON.stringify(results, null, 2));
  // The same table in Markdown, for README.md and docs/performance.md.
  await writeFile(join(dir, 'latest.md'), markdown(String(results.started_at), rows, rounds, results.ecdsa as string | undefined));
  console.log(`results written to ${file} (Markdown table: bench/results/latest.md)`);
}

type Row = [
  string,
  (
    | PhaseResult
    | (Omit<PhaseResult, 'eventLoopUtilization' | 'commitsPerRequest' | 'cpuUsPerRequest' | 'walBytesPerRequest' | 'walFullPageImagesPerRequest'> &
        Partial<PhaseResult>)
  ),
];

function markdown(date: string, rows: Row[], rounds: number, ecdsa: string | undefined): string {
  const cell = (value: number | undefined, digits: number) => (value === undefined ? '' : value.toFixed(digits));
  const lines = [
    `Measured ${date.slice(0, 16).replace('T', ' ')} UTC with \`npm run bench\`, ${cpus().length} cores (generator, services and PostgreSQL on one box).` +
      ` The exchange's and the gateway's rows beside their baselines are each the median of ${rounds} alternated rounds.` +
      (ecdsa ? ` ECDSA on the ${ecdsa.replace('-', ' ')} (\`WRIT_ECDSA\`).` : ''),
    '',
    '| load | req/s | p50 ms | p99 ms | errors | commits/req | WAL bytes/req | event loop | CPU µs/req |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      ([name, row]) =>
        `| ${name} | ${cell(row.requestsPerSecond, 0)} | ${cell(row.p50Ms, 2)} | ${cell(row.p99Ms, 2)} | ${row.non2xx + row.errors} | ${cell(row.commitsPerRequest, 2)} | ${cell(row.walBytesPerRequest, 0)} | ${cell(row.eventLoopUtilization, 2)} | ${cell(row.cpuUsPerRequest, 0)} |`,
    ),
  ];
  return `${lines.join('\n')}\n`;
}

function report(results: Record<string, unknown>): Row[] {
  const exchange = results.token_exchange as Awaited<ReturnType<typeof benchTokenExchange>> | undefined;
  const gateway = results.gateway as Awaited<ReturnType<typeof benchGateway>> | undefined;
  const audit = results.audit as Awaited<ReturnType<typeof benchAudit>> | undefined;
  const policy = results.policy as Awaited<ReturnType<typeof benchPolicy>> | undefined;
  const peers = results.peers as Awaited<ReturnType<typeof benchPeers>> | undefined;
  const scale = results.scale as Awaited<ReturnType<typeof benchScale>> | undefined;
  const rows: Row[] = [];
  if (exchange) {
    rows.push(['minimal exchange (baseline), max', exchange.minimal_exchange_max], ['token exchange, max', exchange.token_exchange_max]);
    rows.push([`minimal exchange @ ${exchange.token_exchange_at_half_load.targetRate}/s`, exchange.minimal_exchange_at_half_load]);
    rows.push([`token exchange @ ${exchange.token_exchange_at_half_load.targetRate}/s`, exchange.token_exchange_at_half_load]);
    rows.push(['token exchange, one fresh task, max', exchange.fresh_task_max]);
    rows.push([`token exchange, one task with ${exchange.prior_grants} grants`, exchange.task_with_prior_grants_max]);
  }
  if (gateway) {
    rows.push(['plain proxy (baseline), max', gateway.plain_proxy_max], ['gateway, max', gateway.gateway_max]);
    rows.push(['gateway, use-limited credentials, max', gateway.gateway_use_limited_max]);
    rows.push([`plain proxy @ ${gateway.gateway_at_half_load.targetRate}/s`, gateway.plain_proxy_at_half_load]);
    rows.push([`gateway @ ${gateway.gateway_at_half_load.targetRate}/s`, gateway.gateway_at_half_load]);
  }
  if (scale) {
    for (const [name, row] of [
      ['token exchange', scale.token_exchange],
      ['gateway', scale.gateway],
    ] as const) {
      rows.push([`${name}, one instance, max`, row.one_instance]);
      // The two instances' event loops are printed below the table; the row shows their mean.
      const elu = row.two_instances.eventLoopUtilization;
      rows.push([`${name}, two instances, max`, { ...row.two_instances, eventLoopUtilization: elu.reduce((a, b) => a + b, 0) / elu.length }]);
    }
  }
  for (const peer of peers?.rows ?? [])
    rows.push([`${peer.system}: ${peer.operation}${peer.result.targetRate ? ` @ ${peer.result.targetRate}/s` : ', max'}`, peer.result]);
  const width = Math.max(40, ...rows.map(([name]) => name.length));
  if (rows.length) console.log(`\n${'benchmark'.padEnd(width)}    req/s   p50 ms   p99 ms  non-2xx   commits/req  WAL B/req   ELU   CPU µs/req`);
  const fixed = (value: number | undefined, digits: number, width: number) => (value === undefined ? '-' : value.toFixed(digits)).padStart(width);
  for (const [name, row] of rows) {
    console.log(
      `${name.padEnd(width)} ${fixed(row.requestsPerSecond, 0, 8)} ${fixed(row.p50Ms, 2, 8)} ${fixed(row.p99Ms, 2, 8)} ${String(row.non2xx + row.errors).padStart(8)} ${fixed(row.commitsPerRequest, 2, 13)} ${fixed(row.walBytesPerRequest, 0, 9)} ${fixed(row.eventLoopUtilization, 2, 5)} ${fixed(row.cpuUsPerRequest, 0, 12)}`,
    );
  }
  if (exchange)
    console.log(
      `token exchange / minimal exchange: ${exchange.ratio_to_minimal_exchange}, median of ${exchange.rounds} rounds [${exchange.ratio_to_minimal_exchange_rounds.join(', ')}] (target ≥ ${exchange.targets.ratio_to_minimal_exchange}; ${exchange.targets.exchanges_per_second}/s; p99 ≤ ${exchange.targets.p99_ms_at_half_load} ms at half load: [${exchange.p99_ms_at_half_load_rounds.join(', ')}] ms)`,
    );
  if (gateway)
    console.log(
      `gateway over plain proxy at ${gateway.gateway_at_half_load.targetRate}/s, medians of ${gateway.rounds} rounds: +${gateway.added_p50_ms} ms p50 [${gateway.added_p50_ms_rounds.join(', ')}], +${gateway.added_p99_ms} ms p99 [${gateway.added_p99_ms_rounds.join(', ')}] (targets ≤ 1, ≤ 5); throughput ratio ${gateway.throughput_ratio} [${gateway.throughput_ratio_rounds.join(', ')}] (target ≥ 0.25)`,
    );
  if (scale)
    console.log(
      `two instances over one PostgreSQL (${scale.cpus} cores): token exchange ×${scale.token_exchange.ratio} (event loops ${scale.token_exchange.two_instances.eventLoopUtilization.join(', ')}), gateway ×${scale.gateway.ratio} (event loops ${scale.gateway.two_instances.eventLoopUtilization.join(', ')})`,
    );
  for (const skipped of peers?.skipped ?? []) console.log(`peer not measured: ${skipped}`);
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
    console.log(`\naudit at 50 writers after a checkpoint, by log size   events/s   WAL bytes/event   full pages/event`);
    for (const row of audit.log_size) {
      console.log(
        `${String(row.events_before).padStart(9)} events before                       ${row.events_per_second.toFixed(0).padStart(8)} ${row.wal_bytes_per_event.toFixed(0).padStart(17)} ${row.full_page_images_per_event.toFixed(3).padStart(18)}`,
      );
    }
    console.log(`chain after the run: ${JSON.stringify(audit.chain)}`);
  }
  return rows;
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('bench failed:', error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
