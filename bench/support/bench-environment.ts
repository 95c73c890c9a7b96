import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, WritConfig } from '@writ/config';
import { startEmbeddedPostgres } from '@writ/database';
import { createLogger, createRuntime, Runtime } from '@writ/platform';
import { ActivePolicy } from '@writ/policy';

/** A runtime over a throwaway embedded PostgreSQL (durable settings: fsync and synchronous_commit on). */
export interface BenchEnvironment {
  config: WritConfig;
  runtime: Runtime;
  /** The embedded cluster's superuser (e.g. for `CHECKPOINT`); undefined over an external database. */
  superuserUrl?: string;
  policy: ActivePolicy;
  close(): Promise<void>;
}

/**
 * An instance that joins another's deployment: its database, and the issuer and gateway URLs
 * every instance behind one load balancer shares (tokens name them, not the instance).
 */
export interface JoinedDeployment {
  databaseUrl: string;
  issuer: string;
  gatewayUrl: string;
}

/**
 * Starts PostgreSQL (unless WRIT_DATABASE_URL is set or `joined` names a database) and a runtime
 * on fixed loopback ports.
 */
export async function startBenchEnvironment(ports: { auth: number; gateway: number; admin: number }, joined?: JoinedDeployment): Promise<BenchEnvironment> {
  const dataDir = await mkdtemp(join(tmpdir(), 'writ-bench-'));
  const { chmod } = await import('node:fs/promises');
  await chmod(dataDir, 0o755);
  const external = joined?.databaseUrl ?? process.env.WRIT_DATABASE_URL;
  const database = external ? undefined : await startEmbeddedPostgres({ dataDir, settings: { max_connections: '200' } });
  // WRIT_BENCH_LOG_LEVEL=error: the services' errors reach the bench's output (default: silent,
  // so that a phase measures no logging at all).
  const level = process.env.WRIT_BENCH_LOG_LEVEL === 'error' ? 'error' : 'silent';
  const config = loadConfig({
    WRIT_DATABASE_URL: external ?? database!.url,
    WRIT_MASTER_KEY: process.env.WRIT_MASTER_KEY ?? Buffer.alloc(32, 3).toString('base64'),
    WRIT_DATA_DIR: dataDir,
    WRIT_ISSUER: joined?.issuer ?? `http://127.0.0.1:${ports.auth}`,
    WRIT_GATEWAY_URL: joined?.gatewayUrl ?? `http://127.0.0.1:${ports.gateway}`,
    WRIT_LOG_LEVEL: level,
    // The benchmark's mock upstream listens on loopback.
    WRIT_UPSTREAM_ALLOWED_NETWORKS: '127.0.0.0/8',
  });
  const runtime = await createRuntime({ config, poolSize: 30, logger: createLogger(level) });
  const policy = await ActivePolicy.load(undefined);
  return {
    config,
    runtime,
    policy,
    superuserUrl: database?.url,
    close: async () => {
      await runtime.close();
      if (database) await database.stop();
      await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    },
  };
}
