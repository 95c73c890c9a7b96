import { randomUUID } from 'node:crypto';
import { clientAssertion } from '@writ/testing';
import { LoadResult, runLoad } from './support/load';
import type { BenchServer } from './support/start-bench-server';

/** Token-exchange results, beside the same app's trivial endpoint measured in the same run. */
export interface TokenExchangeBench {
  baseline_trivial_endpoint: LoadResult;
  token_exchange: LoadResult;
  token_exchange_at_half_load: LoadResult & { target_rate: number };
  ratio_exchange_to_trivial: number;
  targets: { exchanges_per_second: number; p99_ms_at_half_load: number };
}

/**
 * Prepares unique client assertions, then loads the authorization server's `GET /health/live`
 * (baseline) and `POST /oauth2/token` (token exchange) in the same run.
 */
export async function benchTokenExchange(server: BenchServer, options: { durationSeconds: number }): Promise<TokenExchangeBench> {
  const { ready, agentKey } = server;
  // Unique client assertions, signed before the run so that the load measures the server.
  const needed = Math.ceil(options.durationSeconds * 2.2 * 5000) + 5000;
  const now = Math.floor(Date.now() / 1000);
  const bodies: string[] = [];
  for (let index = 0; index < needed; index += 1) {
    bodies.push(
      new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: ready.taskToken,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        authorization_details: ready.details,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await clientAssertion(ready.agentId, agentKey, ready.issuer, { claims: { jti: randomUUID(), exp: now + 295 } }),
      }).toString(),
    );
  }
  let cursor = 0;
  const nextBody = () => {
    if (cursor >= bodies.length) throw new Error('benchmark ran out of prepared client assertions');
    return bodies[cursor++];
  };
  const headers = { 'content-type': 'application/x-www-form-urlencoded' };
  const token = (extra: Partial<Parameters<typeof runLoad>[0]>) =>
    runLoad({ url: `${ready.issuer}/oauth2/token`, method: 'POST', headers, nextBody, durationSeconds: options.durationSeconds, ...extra });
  await runLoad({ url: `${ready.issuer}/health/live`, durationSeconds: 2 });
  await token({ durationSeconds: 2 });
  const baseline = await runLoad({ url: `${ready.issuer}/health/live`, durationSeconds: options.durationSeconds });
  const exchange = await token({});
  const halfRate = Math.max(1, Math.floor(exchange.requestsPerSecond / 2));
  const atHalf = await token({ overallRate: halfRate, connections: 16 });
  return {
    baseline_trivial_endpoint: baseline,
    token_exchange: exchange,
    token_exchange_at_half_load: { ...atHalf, target_rate: halfRate },
    ratio_exchange_to_trivial: exchange.requestsPerSecond / baseline.requestsPerSecond,
    targets: { exchanges_per_second: 2000, p99_ms_at_half_load: 10 },
  };
}
