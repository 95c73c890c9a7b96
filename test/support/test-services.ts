import type { INestApplication } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, LogLevel, WritConfig } from '@writ/config';
import { createLogger, createRuntime, ensureBootstrapAdminToken, Runtime } from '@writ/platform';
import { ActivePolicy } from '@writ/policy';
import { createTestDatabase, freePorts, rememberRowIntegrity, TestDatabase } from '@writ/testing';
import { createAuthorizationServerApp } from '../../apps/authorization-server/src/authorization-server.app';

/** A service app factory, as each app exports it. */
export type AppFactory = (runtime: Runtime, policy: ActivePolicy) => Promise<INestApplication>;

/** Writ's services on real HTTP over a fresh database of the test cluster. */
export interface TestServices {
  config: WritConfig;
  runtime: Runtime;
  policy: ActivePolicy;
  db: TestDatabase;
  issuer: string;
  /** Where this instance's authorization server listens (equals `issuer` unless overridden). */
  authUrl: string;
  gatewayUrl: string;
  adminUrl: string;
  adminToken: string;
  apps: INestApplication[];
  close(): Promise<void>;
}

/** Options of {@link startTestServices}. */
export interface TestServicesOptions {
  /** Extra apps to start beside the authorization server (gateway, admin), each on its own port. */
  gateway?: AppFactory;
  admin?: AppFactory;
  /** Extra `WRIT_*` variables. */
  env?: Record<string, string>;
  /** A path for `WRIT_GATEWAY_URL` (`/gw`), as behind a reverse proxy that strips it before the gateway. */
  gatewayPath?: string;
  /** Reuse a database (e.g. a second instance over the same cluster state). */
  db?: TestDatabase;
  /** Use this database URL as it is (e.g. a scratch cluster the test stops and restarts). */
  databaseUrl?: string;
  /** Receives every log line (JSON) at level `debug`, e.g. to search them for secrets. */
  logSink?: (line: string) => void;
  /** The level of the lines {@link logSink} receives (default `debug`). */
  logSinkLevel?: LogLevel;
  /**
   * Connect the services as the cluster's superuser instead of the least-privilege service
   * login (which the suites use by default, to prove its grants are enough).
   */
  superuser?: boolean;
}

/**
 * Starts the authorization server (and optionally the gateway and the admin API) against a
 * fresh clone of the migrated template database, on free loopback ports, with real keys and
 * the real compiled policy.
 */
export async function startTestServices(options: TestServicesOptions = {}): Promise<TestServices> {
  const db: TestDatabase =
    options.db ?? (options.databaseUrl ? { url: options.databaseUrl, name: 'external', drop: async () => undefined } : await createTestDatabase());
  const [authPort, gatewayPort, adminPort] = await freePorts(3);
  const adminToken = `writ_admin_test_${randomBytes(24).toString('base64url')}`;
  // Removed by close(), unless the suite gives its own.
  const dataDir = await mkdtemp(join(tmpdir(), 'writ-services-'));
  const config = loadConfig({
    WRIT_DATABASE_URL: (!options.superuser && db.serviceUrl) || db.url,
    WRIT_MASTER_KEY: Buffer.alloc(32, 11).toString('base64'),
    WRIT_DATA_DIR: dataDir,
    WRIT_ISSUER: `http://127.0.0.1:${authPort}`,
    WRIT_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}${options.gatewayPath ?? ''}`,
    WRIT_AUTH_PORT: String(authPort),
    WRIT_GATEWAY_PORT: String(gatewayPort),
    WRIT_ADMIN_PORT: String(adminPort),
    WRIT_ADMIN_TOKEN: adminToken,
    WRIT_LOG_LEVEL: process.env.WRIT_TEST_LOG_LEVEL ?? 'silent',
    // Mock upstreams listen on loopback.
    WRIT_UPSTREAM_ALLOWED_NETWORKS: '127.0.0.0/8',
    // Every suite calls from 127.0.0.1 and many attack authentication on purpose: the failure
    // throttle is out of the way unless a suite sets its own limits (test/throttling.e2e-spec.ts).
    WRIT_THROTTLE_SOURCE_FAILURES: '1000000',
    WRIT_THROTTLE_CLIENT_FAILURES: '1000000',
    WRIT_THROTTLE_AUDIT_EVENTS: '10000',
    ...options.env,
  });
  const logger = options.logSink
    ? createLogger(options.logSinkLevel ?? 'debug', 'writ', { write: (line: string) => options.logSink!(line) })
    : createLogger(config.logLevel);
  const runtime = await createRuntime({ config, poolSize: 10, logger });
  // Fixtures given this pool tag their rows under this runtime's master key.
  rememberRowIntegrity(runtime.pool, runtime.rowIntegrity);
  await ensureBootstrapAdminToken(runtime);
  const policy = await ActivePolicy.load(config.policyPath);
  const apps: INestApplication[] = [];
  const listen = async (factory: AppFactory, port: number) => {
    const app = await factory(runtime, policy);
    await app.listen(port, '127.0.0.1');
    apps.push(app);
  };
  await listen(createAuthorizationServerApp, authPort);
  if (options.gateway) await listen(options.gateway, gatewayPort);
  if (options.admin) await listen(options.admin, adminPort);
  return {
    config,
    runtime,
    policy,
    db,
    issuer: config.issuer,
    authUrl: `http://127.0.0.1:${authPort}`,
    gatewayUrl: config.gatewayUrl,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    adminToken,
    apps,
    close: async () => {
      for (const app of apps.reverse()) await app.close().catch(() => undefined);
      await runtime.close();
      if (!options.db) await db.drop().catch(() => undefined);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A second instance over `first`'s database, as behind a load balancer: the same issuer and,
 * when it runs a gateway, the same gateway URL (the audience of the credentials both accept).
 */
export function startSecondInstance(first: TestServices, options: Omit<TestServicesOptions, 'db' | 'databaseUrl'> = {}): Promise<TestServices> {
  return startTestServices({
    ...options,
    db: first.db,
    env: { ...options.env, WRIT_ISSUER: first.issuer, ...(options.gateway ? { WRIT_GATEWAY_URL: first.gatewayUrl } : {}) },
  });
}
