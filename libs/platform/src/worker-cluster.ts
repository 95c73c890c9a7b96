import cluster, { Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { Logger } from 'pino';
import { type WritConfig, withdrawSecretVariables } from '@writ/config';
import { EmbeddedDatabase, startEmbeddedPostgres } from '@writ/database';
import { createLogger } from './logger';

/** A worker tells the primary it has started (its services listen). */
export const WORKER_READY = 'writ:worker-ready';
/** A worker asks the primary for every worker's metrics, aggregated; the primary answers with the text. */
const METRICS_REQUEST = 'writ:metrics-request';
const METRICS_RESPONSE = 'writ:metrics-response';

/** Restarts of dead workers allowed in {@link RESTART_WINDOW_MS} before the primary gives up. */
const MAX_RESTARTS = 5;
const RESTART_WINDOW_MS = 60_000;

interface MetricsRequest {
  type: typeof METRICS_REQUEST;
  id: number;
}

interface MetricsResponse {
  type: typeof METRICS_RESPONSE;
  id: number;
  body?: string;
  error?: string;
}

function isMessage<T extends { type: string }>(message: unknown, type: T['type']): message is T {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type;
}

/**
 * The primary of a service run with `WRIT_WORKERS` > 1 (`node:cluster`: the workers share the
 * service's ports). It starts the embedded PostgreSQL (unless `WRIT_DATABASE_URL`), so that
 * the database outlives any one worker, then forks the workers one after the other, each
 * started before the next (the first migrates and creates the development master key and
 * admin token; the others find them). A worker that dies is replaced, at most
 * {@link MAX_RESTARTS} times a minute; past that, or when a worker cannot start at all, the
 * primary stops everything and exits 1. SIGTERM, SIGINT and SIGHUP stop every worker
 * gracefully (each drains its requests, writes its last audit batches and checkpoint), then
 * the embedded PostgreSQL; exit 0 when every worker stopped cleanly.
 */
export async function runPrimary(service: string, config: WritConfig): Promise<void> {
  const logger = createLogger(config.logLevel);
  // The workers get the secret variables from the fork itself; the embedded PostgreSQL does not.
  const secrets = withdrawSecretVariables();
  const fail = (why: string) => {
    process.stderr.write(`writ: ${service} cannot start: ${why}\n`);
    process.exit(1);
  };
  let embedded: EmbeddedDatabase | undefined;
  let stopping = false;
  let restarts: number[] = [];
  const ready = new Set<number>();
  const stopAll = async (code: number, signal?: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    if (signal) logger.info({ signal }, `${service} stopping`);
    const workers = Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined);
    // A worker still starting (a replacement) has served nothing: its end by the signal is clean.
    const exits = workers.map(
      (worker) => new Promise<number>((resolve) => worker.once('exit', (exitCode) => resolve(ready.has(worker.id) ? (exitCode ?? 1) : 0))),
    );
    for (const worker of workers) worker.process.kill('SIGTERM');
    // Each worker bounds its own stop (drain deadline + 15 s); this one outlasts theirs.
    const deadline = setTimeout(
      () => {
        logger.error(`${service} workers did not stop in time`);
        for (const worker of workers) worker.process.kill('SIGKILL');
      },
      config.operations.shutdownTimeoutSeconds * 1000 + 20_000,
    );
    deadline.unref();
    const codes = await Promise.all(exits);
    clearTimeout(deadline);
    if (embedded) await embedded.stop().catch((error: unknown) => logger.error({ err: String(error) }, 'embedded PostgreSQL did not stop cleanly'));
    const failed = code !== 0 || codes.some((exitCode) => exitCode !== 0);
    if (signal) logger.info(`${service} stopped`);
    process.exit(failed ? 1 : 0);
  };
  /** Workers of the first start: one that dies before it is ready stops the service. */
  const firstStart = new Set<number>();
  const startWorker = (first = false) =>
    new Promise<boolean>((resolve) => {
      const worker = cluster.fork(secrets);
      if (first) firstStart.add(worker.id);
      const onMessage = (message: unknown) => {
        if (!isMessage<{ type: typeof WORKER_READY }>(message, WORKER_READY)) return;
        worker.off('message', onMessage);
        ready.add(worker.id);
        resolve(true);
      };
      worker.on('message', onMessage);
      worker.once('exit', () => resolve(false));
    });
  // From the first instant: a signal while the embedded PostgreSQL starts would otherwise end
  // the primary on the spot and leave that PostgreSQL running without its owner.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void stopAll(0, signal));
  if (!config.databaseUrl) {
    try {
      embedded = await startEmbeddedPostgres({
        dataDir: config.dataDir,
        onLog: (line) => logger.debug({ postgres: line }),
        onEvent: (message) => logger.warn({ dataDir: config.dataDir }, message),
      });
    } catch (error) {
      return fail(`cannot start the embedded PostgreSQL: ${(error instanceof Error ? error.message : String(error)).split('\n')[0]}`);
    }
    // Stopped while it started: stopAll found no PostgreSQL to stop; this one is stopped here.
    if (stopping) return void (await embedded.stop().catch(() => undefined));
  }
  serveAggregatedMetrics(logger);
  // Watched from the first fork: a worker that served and dies while the next ones are still
  // starting is replaced too (it used to go unnoticed, leaving the service a worker short).
  cluster.on('exit', (worker, code, signal) => {
    // A worker of the first start that dies before it is ready stops the service (below).
    if (stopping || (firstStart.has(worker.id) && !ready.has(worker.id))) return;
    const now = Date.now();
    restarts = [...restarts.filter((at) => now - at < RESTART_WINDOW_MS), now];
    if (restarts.length > MAX_RESTARTS) {
      logger.error({ restarts: MAX_RESTARTS, window_seconds: RESTART_WINDOW_MS / 1000 }, `${service} workers keep dying: stopping`);
      void stopAll(1);
      return;
    }
    logger.error({ worker: worker.process.pid, code, signal }, `${service} worker died: starting another`);
    void startWorker().then((started) => {
      if (started) logger.info({ workers: Object.keys(cluster.workers ?? {}).length }, `${service} worker replaced`);
      else if (!stopping) logger.error(`${service} replacement worker could not start`);
    });
  });
  for (let index = 0; index < config.operations.workers; index += 1) {
    // The worker printed why it could not start.
    if (!(await startWorker(true))) return stopAll(1);
  }
  if (!stopping) logger.info({ workers: config.operations.workers, pid: process.pid }, `${service} workers started`);
}

/** The primary's side of clustered `/metrics`: sums every worker's registry (prom-client's aggregator). */
function serveAggregatedMetrics(logger: Logger): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message: unknown) => {
    if (!isMessage<MetricsRequest>(message, METRICS_REQUEST)) return;
    aggregator.clusterMetrics().then(
      (body) => worker.send({ type: METRICS_RESPONSE, id: message.id, body } satisfies MetricsResponse),
      (error: unknown) => {
        logger.warn({ err: String(error) }, 'cluster metrics not aggregated');
        worker.send({ type: METRICS_RESPONSE, id: message.id, error: String(error) } satisfies MetricsResponse);
      },
    );
  });
}

let nextMetricsRequest = 0;

/**
 * In a worker: every worker's metrics, aggregated by the primary (a scrape reaches one worker
 * of the shared port, and must see the whole service).
 */
export function clusterMetrics(): Promise<string> {
  const id = nextMetricsRequest++;
  return new Promise<string>((resolve, reject) => {
    const onMessage = (message: unknown) => {
      if (!isMessage<MetricsResponse>(message, METRICS_RESPONSE) || message.id !== id) return;
      process.off('message', onMessage);
      clearTimeout(timer);
      if (message.body !== undefined) resolve(message.body);
      else reject(new Error(message.error ?? 'cluster metrics unavailable'));
    };
    const timer = setTimeout(() => {
      process.off('message', onMessage);
      reject(new Error('cluster metrics timed out'));
    }, 6_000);
    process.on('message', onMessage);
    process.send!({ type: METRICS_REQUEST, id } satisfies MetricsRequest);
  });
}
