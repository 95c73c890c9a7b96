import { exportJWK } from 'jose';
import { clientAssertion, createClientKey, jwksOf, PAYOUTS_CREATE } from '@writ/testing';
import { sealCredential } from '@writ/connectors';
import { BENCH_UPSTREAM_SECRET } from './bench-constants';
import { createAuthorizationServerApp } from '../../apps/authorization-server/src/authorization-server.app';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { ensureBootstrapAdminToken } from '@writ/platform';
import { readFile } from 'node:fs/promises';
import { startBenchEnvironment } from './bench-environment';

/** What the bench server tells its parent once it is ready. */
export interface BenchServerReady {
  issuer: string;
  taskToken: string;
  agentId: string;
  agentPrivateJwk: Record<string, unknown>;
  details: string;
  /** `authorization_details` of a read credential for the gateway benchmark. */
  readDetails: string;
  gatewayUrl: string;
  /** The admin API in the same process (the audit verification benchmark). */
  adminUrl: string;
  adminToken: string;
  /** Audit events written before the run (`WRIT_BENCH_AUDIT_EVENTS`). */
  auditEvents: number;
}

/**
 * The system under test, in its own process (so the load generator does not share its event
 * loop): PostgreSQL, the authorization server, and a task to exchange against.
 */
async function main(): Promise<void> {
  const port = Number(process.argv[2]);
  const upstreamUrl = process.argv[3] ?? 'http://127.0.0.1:9';
  const env = await startBenchEnvironment({ auth: port, gateway: port + 1, admin: port + 2 });
  const pool = env.runtime.pool;
  const agentKey = await createClientKey();
  const orchestratorKey = await createClientKey();
  await pool.query(`INSERT INTO agents (id, name, jwks) VALUES ('bench-agent', 'bench', $1)`, [jwksOf(agentKey)]);
  await pool.query(`INSERT INTO orchestrators (id, name, jwks, allowed_agents) VALUES ('bench-orch', 'bench', $1, '{*}')`, [jwksOf(orchestratorKey)]);
  const credential = sealCredential(env.runtime.masterKey, 'payments', upstreamUrl, { type: 'bearer', token: BENCH_UPSTREAM_SECRET });
  await pool.query(
    `INSERT INTO connectors (id, name, base_url, operations, credential_type, credential_sealed, credential_fingerprint, credential_set_at)
     VALUES ('payments', 'Payments', $1, $2, $3, $4, $5, now())`,
    [
      upstreamUrl,
      JSON.stringify([{ name: 'balance.get', method: 'GET', path: '/v1/balance', risk: 'read', constraints: {} }, PAYOUTS_CREATE]),
      credential.type,
      credential.sealed,
      credential.fingerprint,
    ],
  );
  const app = await createAuthorizationServerApp(env.runtime, env.policy);
  await app.listen(port, '127.0.0.1');
  const gateway = await createGatewayApp(env.runtime, env.policy);
  await gateway.listen(port + 1, '127.0.0.1');
  const bootstrap = await ensureBootstrapAdminToken(env.runtime);
  const adminToken = (await readFile(bootstrap.file!, 'utf8')).trim();
  const admin = await createAdminApp(env.runtime, env.policy);
  await admin.listen(port + 2, '127.0.0.1');
  // A log of realistic size for the verification benchmark, written in big group commits.
  const auditEvents = Number(process.env.WRIT_BENCH_AUDIT_EVENTS ?? 0);
  for (let written = 0; written < auditEvents; written += 1000) {
    await env.runtime.audit.record(
      Array.from({ length: Math.min(1000, auditEvents - written) }, (_, i) => ({
        type: 'bench.filler',
        outcome: 'info' as const,
        actor: { type: 'system' as const },
        agentId: 'bench-agent',
        data: { n: written + i, purpose: 'benchmark payouts', amount: 42000 },
      })),
    );
  }
  if (auditEvents > 0) await env.runtime.checkpointer?.trigger();
  const issuer = env.config.issuer;
  const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
  const tasksToken = (await fetch(`${issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({
      grant_type: 'client_credentials',
      scope: 'tasks',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion('bench-orch', orchestratorKey, issuer),
    }),
  }).then((response) => response.json())) as { access_token: string };
  const task = (await fetch(`${issuer}/v1/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${tasksToken.access_token}` },
    body: JSON.stringify({
      agent_id: 'bench-agent',
      purpose: 'benchmark payouts',
      ttl_seconds: 3600,
      allowed: [
        { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' } },
        { type: 'connector', connector: 'payments', actions: ['balance.get'] },
      ],
    }),
  }).then((response) => response.json())) as { task_token: string };
  const ready: BenchServerReady = {
    issuer,
    taskToken: task.task_token,
    agentId: 'bench-agent',
    agentPrivateJwk: { ...(await exportJWK(agentKey.privateKey)), kid: agentKey.publicJwk.kid, alg: 'ES256' },
    details: JSON.stringify([
      { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' } },
    ]),
    readDetails: JSON.stringify([{ type: 'connector', connector: 'payments', actions: ['balance.get'] }]),
    gatewayUrl: env.config.gatewayUrl,
    adminUrl: `http://127.0.0.1:${port + 2}`,
    adminToken,
    auditEvents,
  };
  process.send!(ready);
  process.on(
    'message',
    (message) =>
      void (async () => {
        if (message === 'stop') {
          await admin.close();
          await gateway.close();
          await app.close();
          await env.close();
          process.exit(0);
        }
      })(),
  );
}

main().catch((error: unknown) => {
  console.error('bench server failed:', error instanceof Error ? error.message : error);
  process.exit(1);
});
