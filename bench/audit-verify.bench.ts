import { randomUUID } from 'node:crypto';
import { clientAssertion } from '@writ/testing';
import { LoadResult, runLoad } from './support/load';
import type { BenchServer } from './support/start-bench-server';

/** Token exchange latency at a fixed rate, without and during a full audit verification. */
export interface AuditVerifyBench {
  rate: number;
  audit_events: number;
  without_verification: LoadResult;
  during_full_verification: LoadResult;
  verification_ms: number;
  verification_valid: boolean;
  /** The verification's HTTP status, and why it is not valid (its `reason`, or the error it answered). */
  verification_status: number;
  verification_reason?: string;
  ratio_p99: number;
  target_ratio_p99: number;
}

/**
 * Loads `POST /oauth2/token` at a fixed rate twice in one run: alone, then while the admin API
 * of the same process walks the whole audit log (`GET /v1/audit/verify?full=true`). The issue's
 * target: issuance p99 during a verification within 2x of without.
 */
export async function benchAuditVerify(server: BenchServer, options: { durationSeconds: number; rate: number }): Promise<AuditVerifyBench> {
  const { ready, agentKey } = server;
  const needed = Math.ceil(options.rate * options.durationSeconds * 2.5) + 200;
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
  const load = () =>
    runLoad({
      url: `${ready.issuer}/oauth2/token`,
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      nextBody,
      durationSeconds: options.durationSeconds,
      overallRate: options.rate,
      connections: 16,
    });
  const without = await load();
  const started = Date.now();
  const verification = fetch(`${ready.adminUrl}/v1/audit/verify?full=true`, { headers: { authorization: `Bearer ${ready.adminToken}` } }).then(
    async (response) => ({
      ms: Date.now() - started,
      status: response.status,
      body: (await response.json()) as { valid?: boolean; reason?: string; error?: string; error_description?: string },
    }),
  );
  const during = await load();
  const verified = await verification;
  return {
    rate: options.rate,
    audit_events: ready.auditEvents,
    without_verification: without,
    during_full_verification: during,
    verification_ms: verified.ms,
    verification_valid: verified.body.valid === true,
    verification_status: verified.status,
    ...(verified.body.valid === true
      ? {}
      : { verification_reason: verified.body.reason ?? verified.body.error_description ?? verified.body.error ?? 'no reason given' }),
    ratio_p99: during.p99Ms / without.p99Ms,
    target_ratio_p99: 2,
  };
}
