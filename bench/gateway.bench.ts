import { clientAssertion } from '@writ/testing';
import { BENCH_UPSTREAM_SECRET } from './support/bench-constants';
import { LoadResult, runLoad } from './support/load';
import type { BenchServer } from './support/start-bench-server';

/** Proxied reads through the gateway beside direct calls to the same upstream, in the same run. */
export interface GatewayBench {
  direct_upstream: LoadResult;
  through_gateway: LoadResult;
  /** Both at the same fixed rate (half the gateway's maximum): latency without queueing. */
  direct_at_rate: LoadResult & { target_rate: number };
  gateway_at_rate: LoadResult & { target_rate: number };
  /** p50 through the gateway minus p50 direct, at that fixed rate. */
  added_p50_ms: number;
  throughput_ratio: number;
  targets: { added_p50_ms: number; throughput_ratio: number };
}

/**
 * Exchanges one read credential, then loads `GET /v1/balance` on the mock upstream directly
 * (with its own credential) and through the gateway (with the agent's credential): every
 * proxied call verifies the token, reads its state, spends a use with its audit event
 * committed, and forwards.
 */
export async function benchGateway(server: BenchServer, upstreamUrl: string, options: { durationSeconds: number }): Promise<GatewayBench> {
  const { ready, agentKey } = server;
  const response = await fetch(`${ready.issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: ready.taskToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      authorization_details: ready.readDetails,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion(ready.agentId, agentKey, ready.issuer),
    }).toString(),
  });
  const body = (await response.json()) as { access_token?: string; error_description?: string };
  if (!body.access_token) throw new Error(`read credential refused: ${body.error_description}`);
  const direct = () =>
    runLoad({ url: `${upstreamUrl}/v1/balance`, headers: { authorization: `Bearer ${BENCH_UPSTREAM_SECRET}` }, durationSeconds: options.durationSeconds });
  const proxied = () =>
    runLoad({
      url: `${ready.gatewayUrl}/connectors/payments/v1/balance`,
      headers: { authorization: `Bearer ${body.access_token}` },
      durationSeconds: options.durationSeconds,
    });
  await runLoad({ url: `${upstreamUrl}/v1/balance`, headers: { authorization: `Bearer ${BENCH_UPSTREAM_SECRET}` }, durationSeconds: 2 });
  await runLoad({ url: `${ready.gatewayUrl}/connectors/payments/v1/balance`, headers: { authorization: `Bearer ${body.access_token}` }, durationSeconds: 2 });
  const directResult = await direct();
  const gatewayResult = await proxied();
  const rate = Math.max(1, Math.floor(gatewayResult.requestsPerSecond / 2));
  const fixed = { durationSeconds: options.durationSeconds, overallRate: rate, connections: 8 };
  const directAtRate = await runLoad({ url: `${upstreamUrl}/v1/balance`, headers: { authorization: `Bearer ${BENCH_UPSTREAM_SECRET}` }, ...fixed });
  const gatewayAtRate = await runLoad({
    url: `${ready.gatewayUrl}/connectors/payments/v1/balance`,
    headers: { authorization: `Bearer ${body.access_token}` },
    ...fixed,
  });
  return {
    direct_upstream: directResult,
    through_gateway: gatewayResult,
    direct_at_rate: { ...directAtRate, target_rate: rate },
    gateway_at_rate: { ...gatewayAtRate, target_rate: rate },
    added_p50_ms: gatewayAtRate.p50Ms - directAtRate.p50Ms,
    throughput_ratio: gatewayResult.requestsPerSecond / directResult.requestsPerSecond,
    targets: { added_p50_ms: 1, throughput_ratio: 0.4 },
  };
}
