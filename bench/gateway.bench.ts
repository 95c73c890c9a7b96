import { decodeJwt } from 'jose';
import { Client } from 'pg';
import { clientAssertion } from '@writ/testing';
import { LoadTarget, runClosedLoop, runOpenLoop } from './support/open-loop';
import { measurePhase, PhaseResult, rounded } from './support/phase';
import type { BenchServer } from './support/start-bench-server';

/** Proxied reads through the gateway beside a plain Node reverse proxy to the same upstream, in the same run. */
export interface GatewayBench {
  credentials: number;
  plain_proxy_max: PhaseResult;
  gateway_max: PhaseResult;
  /** The same reads with credentials that have a use limit: every call spends a use (as every one-use write does). */
  gateway_use_limited_max: PhaseResult;
  /** Both at the same constant rate (half the gateway's maximum), open loop. */
  plain_proxy_at_half_load: PhaseResult;
  gateway_at_half_load: PhaseResult;
  added_p50_ms: number;
  added_p99_ms: number;
  throughput_ratio: number;
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
export async function benchGateway(server: BenchServer, options: { durationSeconds: number; connections?: number }): Promise<GatewayBench> {
  const seconds = options.durationSeconds;
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
  const proxyMax = await measurePhase(server, () => runClosedLoop(proxy, { seconds, connections }));
  const gatewayMax = await measurePhase(server, () => runClosedLoop(gateway, { seconds, connections }));
  await runClosedLoop(limited, { seconds: 2, connections });
  const limitedMax = await measurePhase(server, () => runClosedLoop(limited, { seconds, connections }));
  const half = Math.max(1, Math.floor(gatewayMax.requestsPerSecond / 2));
  const proxyHalf = await measurePhase(server, () => runOpenLoop(proxy, half, { seconds, connections: 64 }));
  const gatewayHalf = await measurePhase(server, () => runOpenLoop(gateway, half, { seconds, connections: 64 }));
  return {
    credentials: tokens.length,
    plain_proxy_max: rounded(proxyMax),
    gateway_max: rounded(gatewayMax),
    gateway_use_limited_max: rounded(limitedMax),
    plain_proxy_at_half_load: rounded(proxyHalf),
    gateway_at_half_load: rounded(gatewayHalf),
    added_p50_ms: Number((gatewayHalf.p50Ms - proxyHalf.p50Ms).toFixed(3)),
    added_p99_ms: Number((gatewayHalf.p99Ms - proxyHalf.p99Ms).toFixed(3)),
    throughput_ratio: Number((gatewayMax.requestsPerSecond / proxyMax.requestsPerSecond).toFixed(3)),
    targets: { added_p50_ms: 1, added_p99_ms: 5, throughput_ratio: 0.25 },
  };
}
