import cluster from 'node:cluster';
import type { INestApplication } from '@nestjs/common';
import type { Logger } from 'pino';
import { ConfigError, loadConfig, WritConfig } from '@writ/config';
import { drainHttpApps } from './http-app';
import { Runtime, StartupError } from './runtime';
import { runPrimary, WORKER_READY } from './worker-cluster';

/** What a started service hands back to {@link runMain}. */
export interface StartedService {
  logger: Logger;
  stop: () => Promise<void>;
  /** Upper bound of `stop` (the drain deadline plus time for the last writes); past it, exit 1. */
  stopTimeoutMs?: number;
}

/**
 * The graceful stop of a process's services, in order: every app refuses new requests (`503`)
 * and drains its admitted ones (up to `WRIT_SHUTDOWN_TIMEOUT_SECONDS`, all apps at once), then
 * stops accepting connections, then the
 * apps close (background work stops), then the runtime: the audit writer's last batches and
 * checkpoint, the pools, and the embedded PostgreSQL last.
 */
export async function stopServices(apps: INestApplication[], runtime: Runtime): Promise<void> {
  const deadlineMs = runtime.config.operations.shutdownTimeoutSeconds * 1000;
  const drained = await drainHttpApps(apps, deadlineMs);
  if (drained.includes(false)) runtime.logger.warn({ deadline_seconds: deadlineMs / 1000 }, 'requests still running at the shutdown deadline were cut');
  for (const app of [...apps].reverse()) await app.close().catch((error: unknown) => runtime.logger.warn({ err: String(error) }, 'error while closing an app'));
  await runtime.close();
}

/**
 * `app.listen`, with a failure said in terms of the configuration: `listen EADDRINUSE`,
 * `EADDRNOTAVAIL` (an address not on this host) or `getaddrinfo ENOTFOUND` (a `WRIT_HOST` name
 * that does not resolve) name the variables to look at, as every other start failure does.
 */
export async function listenOn(app: INestApplication, host: string, port: number, portVariable: string): Promise<void> {
  try {
    await app.listen(port, host);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'EADDRINUSE'
        ? `the port is in use (${portVariable})`
        : code === 'EADDRNOTAVAIL'
          ? 'the address is not one of this host (WRIT_HOST)'
          : code === 'ENOTFOUND' || code === 'EAI_AGAIN'
            ? 'the host name does not resolve (WRIT_HOST)'
            : code === 'EACCES'
              ? `the port needs privileges this process does not have (${portVariable})`
              : error instanceof Error
                ? error.message.split('\n')[0]
                : String(error);
    throw new StartupError(`cannot listen on ${host}:${port}: ${why}`);
  }
}

/** The stop bound of a runtime's services: drain deadline plus 15 s for audit, pools and PostgreSQL. */
export function stopTimeoutOf(runtime: Runtime): number {
  return runtime.config.operations.shutdownTimeoutSeconds * 1000 + 15_000;
}

/**
 * Runs a service entry point: any failure to start is printed as one line on stderr
 * ("writ: <service> cannot start: <why>") and the process exits 1, without a stack trace.
 * SIGTERM, SIGINT and SIGHUP stop it gracefully (see {@link stopServices}) and it exits 0;
 * a stop that does not finish in time exits 1. A signal before it has started abandons the
 * start and exits 0.
 */
export function runMain(service: string, start: () => Promise<StartedService>): void {
  if (cluster.isPrimary) {
    // WRIT_WORKERS > 1: this process supervises the workers (worker-cluster.ts); each worker
    // runs `start` below. A configuration error is reported by `start`, as without workers.
    let config: WritConfig | undefined;
    try {
      config = loadConfig();
    } catch {
      config = undefined;
    }
    if (config && config.operations.workers > 1) {
      void runPrimary(service, config);
      return;
    }
  }
  // Watched from the first instant: by default a signal while starting (the embedded
  // PostgreSQL's start, the migrations, the migration lock wait) ends the process on the spot,
  // without its exit hooks, leaving the PostgreSQL it started running without its owner, and
  // exiting 143. Nothing is served yet, so nothing is drained: the start is abandoned, the exit
  // hooks stop that PostgreSQL, and the exit is 0 as for any stop on a signal. (A migration cut
  // there is rolled back; an index build cut leaves an INVALID index the next start rebuilds.)
  let onSignal: (signal: string) => void = (signal) => {
    process.stderr.write(`writ: ${service} stopped by ${signal} while starting\n`);
    process.exit(0);
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => onSignal(signal));
  start()
    .then(({ logger, stop, stopTimeoutMs }) => {
      if (cluster.isWorker) process.send!({ type: WORKER_READY });
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, `${service} stopping`);
        const timer = setTimeout(() => {
          logger.error({ timeout_ms: stopTimeoutMs }, `${service} did not stop in time`);
          process.exit(1);
        }, stopTimeoutMs ?? 40_000);
        timer.unref();
        stop()
          .then(() => {
            logger.info(`${service} stopped`);
            process.exit(0);
          })
          .catch((error: unknown) => {
            logger.error({ err: String(error) }, 'error while stopping');
            process.exit(1);
          });
      };
      onSignal = shutdown;
    })
    .catch((error: unknown) => {
      const reason =
        error instanceof StartupError || error instanceof ConfigError ? error.message : error instanceof Error ? error.message.split('\n')[0] : String(error);
      process.stderr.write(`writ: ${service} cannot start: ${reason}\n`);
      process.exit(1);
    });
}
