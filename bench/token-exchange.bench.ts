import { randomUUID } from 'node:crypto';
import { clientAssertion } from '@writ/testing';
import { LoadTarget, runClosedLoop, runOpenLoop } from './support/open-loop';
import { measurePhase, PhaseResult, rounded } from './support/phase';
import { inRounds, median, medianSlice, perRound, round3 } from './support/rounds';
import type { BenchServer } from './support/start-bench-server';

/**
 * Token-exchange results, beside the minimal-exchange baseline measured in the same run. Each
 * comparison runs in `rounds` alternated rounds (see `support/rounds.ts`): a phase reported is
 * its median slice, a ratio or difference the median of the rounds' own.
 */
export interface TokenExchangeBench {
  tasks: number;
  rounds: number;
  minimal_exchange_max: PhaseResult;
  token_exchange_max: PhaseResult;
  /** Both at half of Writ's maximum (the median round's), open loop; the slices of the median p99. */
  minimal_exchange_at_half_load: PhaseResult;
  token_exchange_at_half_load: PhaseResult;
  ratio_to_minimal_exchange: number;
  /** Each round's ratio, and each round's p99 at half load: the spread behind the medians. */
  ratio_to_minimal_exchange_rounds: number[];
  p99_ms_at_half_load_rounds: number[];
  /** One task alone, fresh, then one with `prior_grants` credentials already issued (closed loop, once each). */
  prior_grants: number;
  fresh_task_max: PhaseResult;
  task_with_prior_grants_max: PhaseResult;
  targets: { exchanges_per_second: number; ratio_to_minimal_exchange: number; p99_ms_at_half_load: number };
}

/** Options of {@link benchTokenExchange}. */
export interface ExchangeBenchOptions {
  durationSeconds: number;
  /** Rounds of each comparison (default 3). */
  rounds?: number;
  /** Concurrent connections of the maximum-throughput phases. */
  connections?: number;
}

/**
 * Signs `count` unique client assertions before a phase (so that the load measures the
 * server, not the generator), spread round-robin over every task.
 */
export async function prepareBodies(server: BenchServer, count: number, tasks = server.ready.taskTokens): Promise<() => string | null> {
  const { ready, agentKey } = server;
  const now = Math.floor(Date.now() / 1000);
  const bodies: string[] = new Array<string>(count);
  for (let index = 0; index < count; index += 1) {
    bodies[index] = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: tasks[index % tasks.length],
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      authorization_details: ready.details,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(ready.agentId, agentKey, ready.issuer, { claims: { jti: randomUUID(), exp: now + 295 } }),
    }).toString();
  }
  let cursor = 0;
  return () => (cursor < bodies.length ? bodies[cursor++] : null);
}

/**
 * Loads Writ's token exchange (`POST /oauth2/token`, RFC 8693 with a client assertion, the
 * compiled policy and the chained audit event) and the minimal-exchange baseline: maximum
 * throughput (closed loop) for each, then both at half Writ's maximum (open loop, constant
 * rate, latency from each request's scheduled time), each pair in alternated rounds; then one
 * fresh task and one with many prior grants.
 */
export async function benchTokenExchange(server: BenchServer, options: ExchangeBenchOptions): Promise<TokenExchangeBench> {
  const seconds = options.durationSeconds;
  const connections = options.connections ?? 32;
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  // Bounded by count as well as time: at most 4 000/s (Writ) and 6 000/s (the baseline) for `seconds`.
  const writ = async (count: number): Promise<LoadTarget> => ({
    url: `${server.ready.issuer}/oauth2/token`,
    method: 'POST',
    headers,
    nextBody: await prepareBodies(server, count),
  });
  const minimal = async (count: number): Promise<LoadTarget> => ({
    url: server.ready.minimalExchangeUrl,
    method: 'POST',
    headers,
    nextBody: await prepareBodies(server, count),
  });
  const rounds = options.rounds ?? 3;
  // Warm-up (JIT, pools, caches): not reported.
  await runClosedLoop(await minimal(3000), { seconds: 2, connections });
  await runClosedLoop(await writ(3000), { seconds: 2, connections });
  // Bodies are signed before each slice's measurement starts.
  const closed = (prepare: () => Promise<LoadTarget>) => async () => {
    const target = await prepare();
    return measurePhase(server, () => runClosedLoop(target, { seconds, connections }));
  };
  const max = await inRounds(rounds, [
    ['minimal', closed(() => minimal(seconds * 6000))],
    ['writ', closed(() => writ(seconds * 4000))],
  ]);
  const half = Math.max(1, Math.floor(median(max.writ.map((slice) => slice.requestsPerSecond)) / 2));
  const paced = (prepare: () => Promise<LoadTarget>) => async () => {
    const target = await prepare();
    return measurePhase(server, () => runOpenLoop(target, half, { seconds, connections: 64 }));
  };
  const atHalf = await inRounds(rounds, [
    ['minimal', paced(() => minimal(seconds * half))],
    ['writ', paced(() => writ(seconds * half))],
  ]);
  // Once each, not in rounds: a fresh task stays fresh for one slice only.
  const oneTask = (taskToken: string) =>
    closed(async () => ({
      url: `${server.ready.issuer}/oauth2/token`,
      method: 'POST',
      headers,
      nextBody: await prepareBodies(server, seconds * 4000, [taskToken]),
    }))();
  const fresh = await oneTask(server.ready.freshTaskToken);
  const heavy = await oneTask(server.ready.heavyTaskToken);
  const ratios = perRound(max.writ, max.minimal, (writ, minimal) => writ.requestsPerSecond / minimal.requestsPerSecond);
  const byP99 = (slice: PhaseResult) => slice.p99Ms;
  return {
    tasks: server.ready.taskTokens.length,
    rounds,
    prior_grants: server.ready.priorGrants,
    fresh_task_max: rounded(fresh),
    task_with_prior_grants_max: rounded(heavy),
    minimal_exchange_max: rounded(medianSlice(max.minimal)),
    token_exchange_max: rounded(medianSlice(max.writ)),
    minimal_exchange_at_half_load: rounded(medianSlice(atHalf.minimal, byP99)),
    token_exchange_at_half_load: rounded(medianSlice(atHalf.writ, byP99)),
    ratio_to_minimal_exchange: round3(median(ratios)),
    ratio_to_minimal_exchange_rounds: ratios,
    p99_ms_at_half_load_rounds: atHalf.writ.map((slice) => round3(slice.p99Ms)),
    targets: { exchanges_per_second: 2000, ratio_to_minimal_exchange: 0.6, p99_ms_at_half_load: 10 },
  };
}
