import { exportJWK } from 'jose';
import { Pool } from 'pg';
import { clientAssertion, createClientKey, insertAgentRow, insertOrchestratorRow, jwksOf, PAYOUTS_CREATE, tagConnectorRow } from '@writ/testing';
import { sealCredential } from '@writ/connectors';
import { BENCH_UPSTREAM_SECRET } from './bench-constants';
import { createAuthorizationServerApp } from '../../apps/authorization-server/src/authorization-server.app';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { createAdminApp } from '../../apps/admin/src/admin.app';
import { ensureBootstrapAdminToken } from '@writ/platform';
import { readFile } from 'node:fs/promises';
import { startBenchEnvironment } from './bench-environment';
import { startMinimalExchange, startPlainProxy } from './baselines';
import { BENCH_PORTS } from './bench-ports';
import { serveParent } from './server-stats';

/** What the bench server tells its parent once it is ready. */
export interface BenchServerReady {
  issuer: string;
  taskToken: string;
  /** Task tokens of every task the load is spread over (the first is `taskToken`). */
  taskTokens: string[];
  /** A task with no credentials, and one with `WRIT_BENCH_PRIOR_GRANTS` (default 10 000) already issued. */
  freshTaskToken: string;
  heavyTaskToken: string;
  priorGrants: number;
  /** The minimal-exchange baseline's token endpoint, in this process. */
  minimalExchangeUrl: string;
  /** The plain reverse proxy's base URL (to the same upstream), in this process. */
  plainProxyUrl: string;
  agentId: string;
  agentPrivateJwk: Record<string, unknown>;
  details: string;
  /** `authorization_details` of a read credential for the gateway benchmark. */
  readDetails: string;
  gatewayUrl: string;
  /** The admin API in the same process (the audit verification benchmark). */
  adminUrl: string;
  adminToken: string;
  /** Audit events written before the run (`WRIT_BENCH_AUDIT_EVENTS`, default 0). */
  auditEvents: number;
  /** The database this server uses (a second instance joins it: the scaling benchmark). */
  databaseUrl: string;
  /** Where this server's ECDSA runs (`WRIT_ECDSA`, `auto` unless set). */
  ecdsa: 'thread-pool' | 'main-thread';
}

/** What the bench server answers to `{ type: 'stats' }`: cumulative counters, diffed by the parent. */
export interface BenchServerStats {
  type: 'stats';
  /** `performance.eventLoopUtilization()` of this process since it started. */
  elu: { idle: number; active: number; utilization: number };
  /**
   * The cluster's next transaction id. Its delta counts write transactions (each one a WAL
   * flush at commit), exactly and at once; `pg_stat_database.xact_commit` is published by
   * idle backends only up to 10 s late and also counts read-only transactions.
   */
  xactCommit: number;
  /**
   * WAL written by the whole cluster (`pg_stat_wal`, PostgreSQL 14+): bytes, and full-page images
   * (a page's first change after a checkpoint writes the whole 8 KiB page).
   */
  walBytes: number;
  walFullPageImages: number;
  /** CPU time of this process (user + system), microseconds. */
  cpuUs: number;
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
  // Tagged as Writ writes them: an untagged registration is refused.
  await insertAgentRow(pool, env.runtime.rowIntegrity, { id: 'bench-agent', name: 'bench', jwks: jwksOf(agentKey) });
  await insertOrchestratorRow(pool, env.runtime.rowIntegrity, { id: 'bench-orch', name: 'bench', jwks: jwksOf(orchestratorKey), allowedAgents: ['*'] });
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
  await tagConnectorRow(pool, env.runtime.rowIntegrity, 'payments');
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
  // The load is spread over many tasks, as in production (WRIT_BENCH_TASKS, default 32).
  const taskCount = Math.max(1, Number(process.env.WRIT_BENCH_TASKS ?? 32));
  const taskTokens: string[] = [];
  for (let index = 0; index < taskCount + 2; index += 1) {
    const task = (await fetch(`${issuer}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tasksToken.access_token}` },
      body: JSON.stringify({
        agent_id: 'bench-agent',
        purpose: `benchmark payouts ${index}`,
        ttl_seconds: 3600,
        allowed: [
          { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' } },
          { type: 'connector', connector: 'payments', actions: ['balance.get'] },
        ],
      }),
    }).then((response) => response.json())) as { task_token?: string; error_description?: string };
    if (!task.task_token) throw new Error(`task refused: ${task.error_description}`);
    taskTokens.push(task.task_token);
  }
  // Two more tasks: one fresh, one whose credentials already number WRIT_BENCH_PRIOR_GRANTS.
  const [freshTaskToken, heavyTaskToken] = taskTokens.splice(taskCount);
  const priorGrants = Number(process.env.WRIT_BENCH_PRIOR_GRANTS ?? 10_000);
  const heavyTaskId = (JSON.parse(Buffer.from(heavyTaskToken.split('.')[1], 'base64url').toString('utf8')) as { task_id: string }).task_id;
  const first = await fetch(`${issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: heavyTaskToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      authorization_details: JSON.stringify([{ type: 'connector', connector: 'payments', actions: ['balance.get'] }]),
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await clientAssertion('bench-agent', agentKey, issuer),
    }),
  });
  if (first.status !== 200) throw new Error(`seed exchange refused: ${first.status}`);
  // Copies of that credential (as the task's own issuances would leave), in one statement.
  await pool.query(
    `INSERT INTO access_tokens (jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
                                max_uses, issued_at, expires_at, cnf_jkt, budget_entries)
     SELECT 'bench-prior-' || g, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
            max_uses, issued_at, expires_at, cnf_jkt, budget_entries
       FROM access_tokens, generate_series(2, $2::int) g WHERE task_id = $1::uuid`,
    [heavyTaskId, priorGrants],
  );
  const issuerJwks = (await fetch(`${issuer}/oauth2/jwks`).then((response) => response.json())) as { keys: [] };
  const baselinePool = new Pool({ connectionString: env.config.databaseUrl, max: 16 });
  const minimal = await startMinimalExchange(BENCH_PORTS.minimalExchange, {
    pool: baselinePool,
    issuer,
    issuerJwks,
    agentJwks: jwksOf(agentKey),
  });
  const proxy = await startPlainProxy(BENCH_PORTS.plainProxy, upstreamUrl, `Bearer ${BENCH_UPSTREAM_SECRET}`);
  const ready: BenchServerReady = {
    issuer,
    taskToken: taskTokens[0],
    taskTokens,
    freshTaskToken,
    heavyTaskToken,
    priorGrants,
    minimalExchangeUrl: `http://127.0.0.1:${BENCH_PORTS.minimalExchange}/oauth2/token`,
    plainProxyUrl: `http://127.0.0.1:${BENCH_PORTS.plainProxy}`,
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
    databaseUrl: env.config.databaseUrl!,
    ecdsa: env.config.operations.ecdsa,
  };
  process.send!(ready);
  serveParent(pool, async () => {
    minimal.close();
    proxy.close();
    minimal.closeAllConnections();
    proxy.closeAllConnections();
    await baselinePool.end();
    await admin.close();
    await gateway.close();
    await app.close();
    await env.close();
  });
}

main().catch((error: unknown) => {
  console.error('bench server failed:', error instanceof Error ? error.message : error);
  process.exit(1);
});
