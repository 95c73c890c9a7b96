import type { Logger } from 'pino';
import { ConfigError } from '@writ/config';
import { StartupError } from './runtime';

/**
 * Runs a service entry point: any failure to start is printed as one line on stderr
 * ("writ: <service> cannot start: <why>") and the process exits 1, without a stack trace.
 */
export function runMain(service: string, start: () => Promise<{ logger: Logger; stop: () => Promise<void> }>): void {
  start()
    .then(({ logger, stop }) => {
      let stopping = false;
      const shutdown = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, `${service} stopping`);
        stop()
          .catch((error: unknown) => logger.error({ err: String(error) }, 'error while stopping'))
          .finally(() => process.exit(0));
      };
      process.once('SIGINT', () => shutdown('SIGINT'));
      process.once('SIGTERM', () => shutdown('SIGTERM'));
    })
    .catch((error: unknown) => {
      const reason =
        error instanceof StartupError || error instanceof ConfigError ? error.message : error instanceof Error ? error.message.split('\n')[0] : String(error);
      process.stderr.write(`writ: ${service} cannot start: ${reason}\n`);
      process.exit(1);
    });
}
