import { decodeJwt } from 'jose';
import { Client } from 'pg';
import { clientAssertion } from '@writ/testing';
import { LoadTarget, runClosedLoop, runOpenLoop } from './support/open-loop';
import { measurePhase, PhaseResult, rounded } from './support/phase';
import { inRounds, median, medianSlice, perRound, round3 } from './support/rounds';
import type { BenchServer } from './support/start-bench-server';

/**
 * Proxied reads through the gateway beside a plain Node reverse proxy to the same upstream, in
 * the same run. Each comparison runs in `rounds` alternated rounds (see `support/rounds.ts`):
 * a phase reported is its median slice, a ratio or difference the median of the rounds' own.
 */
export interface GatewayBench {
  credentials: number;
  rounds: number;
  plain_proxy_max: PhaseResult;
  gateway_max: PhaseResult;
  /** The same reads with credentials that have a use limit: every call spends a use (as every one-use write does). */
  gateway_use_limited_max: PhaseResult;
  /** Both at the same constant rate (half the gateway's median maximum), open loop; the slices of the median p99. */
  plain_proxy_at_half_load: PhaseResult;
  gateway_at_half_load: PhaseResult;
  added_p50_ms: number;
  added_p99_ms: number;
  throughput_ratio: number;
  /** Each round's figures: the spread behind the medians. */
  added_p50_ms_rounds: number[];
  added_p99_ms_rounds: number[];
  throughput_ratio_rounds: number[];
  targets: { added_p50_ms: number; added_p99_ms: number; throughput_ratio: number };
}

export async function readCredential(server: BenchServer, taskToken: string): Promise<string> {
  const { ready, agentKey } = server;
  const response = await fetch(`${ready.issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: taskToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      authorization_details: ready.readDetails,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(ready.agentId, agentKey, ready.issuer),
    }).toString(),
  });
  const body = (await response.json()) as { access_token?: string; error_description?: string };
  if (!body.access_token) throw new Error(`read credential refused: ${body.error_description}`);
  return body.access_token;
}

/**
 * Gives `tokens` a use limit they will not reach in a run, so that every call through the
 * gateway spends a use, as a write's one-use credential does (the shipped policy leaves reads
 * unlimited). Written in the bench's own database before any call: the gateway remembers a
 * credential's limit from its first call.
 */
async function limitUses(server: BenchServer, tokens: string[]): Promise<void> {
  const jtis = tokens.map((token) => decodeJwt(token).jti);
  const db = new Client({ connectionString: server.ready.databaseUrl });
  await db.connect();
  try {
    await db.query('UPDATE access_tokens SET max_uses = 1000000000 WHERE jti = ANY($1::text[])', [jtis]);
  } finally {
    await db.end();
  }
}

/**
 * Exchanges one read credential per task, then loads `GET /v1/balance` through a plain
 * reverse proxy (baseline) and through the gateway, the credentials taken in turn: every
 * proxied call verifies its token, reads its grant's state, spends a use with its audit
 * event committed, and forwards.
 */
export async function benchGateway(server: BenchServer, options: { durationSeconds: number; rounds?: number; connections?: number }): Promise<GatewayBench> {
  const seconds = options.durationSeconds;
  const rounds = options.rounds ?? 3;
  const connections = options.connections ?? 32;
  const tokens: string[] = [];
  for (const taskToken of server.ready.taskTokens) tokens.push(await readCredential(server, taskToken));
  let turn = 0;
  const gateway: LoadTarget = {
    url: `${server.ready.gatewayUrl}/connectors/payments/v1/balance`,
    nextHeaders: () => ({ authorization: `Bearer ${tokens[turn++ % tokens.length]}` }),
  };
  const limitedTokens: string[] = [];
  for (const taskToken of server.ready.taskTokens) limitedTokens.push(await readCredential(server, taskToken));
  await limitUses(server, limitedTokens);
  let limitedTurn = 0;
  const limited: LoadTarget = {
    url: gateway.url,
    nextHeaders: () => ({ authorization: `Bearer ${limitedTokens[limitedTurn++ % limitedTokens.length]}` }),
  };
  const proxy: LoadTarget = { url: `${server.ready.plainProxyUrl}/connectors/payments/v1/balance` };
  await runClosedLoop(proxy, { seconds: 2, connections });
  await runClosedLoop(gateway, { seconds: 2, connections });
  await runClosedLoop(limited, { seconds: 2, connections });
  const closed = (target: LoadTarget) => () => measurePhase(server, () => runClosedLoop(target, { seconds, connections }));
  const max = await inRounds(rounds, [
    ['proxy', closed(proxy)],
    ['gateway', closed(gateway)],
    ['limited', closed(limited)],
  ]);
  const half = Math.max(1, Math.floor(median(max.gateway.map((slice) => slice.requestsPerSecond)) / 2));
  const paced = (target: LoadTarget) => () => measurePhase(server, () => runOpenLoop(target, half, { seconds, connections: 64 }));
  const atHalf = await inRounds(rounds, [
    ['proxy', paced(proxy)],
    ['gateway', paced(gateway)],
  ]);
  const byP99 = (slice: PhaseResult) => slice.p99Ms;
  const addedP50 = perRound(atHalf.gateway, atHalf.proxy, (gateway, proxy) => gateway.p50Ms - proxy.p50Ms);
  const addedP99 = perRound(atHalf.gateway, atHalf.proxy, (gateway, proxy) => gateway.p99Ms - proxy.p99Ms);
  const ratios = perRound(max.gateway, max.proxy, (gateway, proxy) => gateway.requestsPerSecond / proxy.requestsPerSecond);
  return {
    credentials: tokens.length,
    rounds,
    plain_proxy_max: rounded(medianSlice(max.proxy)),
    gateway_max: rounded(medianSlice(max.gateway)),
    gateway_use_limited_max: rounded(medianSlice(max.limited)),
    plain_proxy_at_half_load: rounded(medianSlice(atHalf.proxy, byP99)),
    gateway_at_half_load: rounded(medianSlice(atHalf.gateway, byP99)),
    added_p50_ms: round3(median(addedP50)),
    added_p99_ms: round3(median(addedP99)),
    throughput_ratio: round3(median(ratios)),
    added_p50_ms_rounds: addedP50,
    added_p99_ms_rounds: addedP99,
    throughput_ratio_rounds: ratios,
    targets: { added_p50_ms: 1, added_p99_ms: 5, throughput_ratio: 0.25 },
  };
}
