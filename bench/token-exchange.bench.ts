import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { importJWK } from 'jose';
import type { CryptoKey } from 'jose';
import { clientAssertion } from '@writ/testing';
import type { BenchServerReady } from './support/bench-server';
import { LoadResult, runLoad } from './support/load';

/** Token-exchange results, beside the same app's trivial endpoint measured in the same run. */
export interface TokenExchangeBench {
  baseline_trivial_endpoint: LoadResult;
  token_exchange: LoadResult;
  token_exchange_at_half_load: LoadResult & { target_rate: number };
  ratio_exchange_to_trivial: number;
  targets: { exchanges_per_second: number; p99_ms_at_half_load: number };
}

/**
 * Starts the authorization server in a child process, prepares unique client assertions,
 * then loads `GET /health/live` (baseline) and `POST /oauth2/token` (token exchange).
 */
export async function benchTokenExchange(options: { durationSeconds: number; port: number }): Promise<TokenExchangeBench> {
  const child = fork(join(__dirname, 'support', 'bench-server.js'), [String(options.port)], { stdio: 'inherit' });
  const ready = await new Promise<BenchServerReady>((resolve, reject) => {
    child.once('message', (message) => resolve(message as BenchServerReady));
    child.once('exit', (code) => reject(new Error(`bench server exited with ${code}`)));
  });
  try {
    const key = (await importJWK(ready.agentPrivateJwk, 'ES256')) as CryptoKey;
    const agentKey = { privateKey: key, publicJwk: { kid: ready.agentPrivateJwk.kid as string, alg: 'ES256', use: 'sig', kty: 'EC' }, alg: 'ES256' };
    // Unique client assertions, signed before the run so that the load measures the server.
    const needed = Math.ceil(options.durationSeconds * 2.2 * 5000) + 5000;
    const now = Math.floor(Date.now() / 1000);
    const bodies: string[] = [];
    for (let index = 0; index < needed; index += 1) {
      bodies.push(new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: ready.taskToken,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        authorization_details: ready.details,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await clientAssertion(ready.agentId, agentKey, ready.issuer, { claims: { jti: randomUUID(), exp: now + 295 } }),
      }).toString());
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
  } finally {
    child.send('stop');
    await new Promise((resolve) => child.once('exit', resolve));
  }
}
