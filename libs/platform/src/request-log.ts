import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { loggablePath } from './request-values';

/**
 * Request logging without per-request logger objects: each request gets its id (`idOf` the
 * caller's `X-Request-Id` header; sent back as `X-Request-Id`) and, when it ends,
 * one line (`req` id, method and path without the query nor a connect link, `res` status, `responseTime` in ms)
 * at `error` for a 5xx, `warn` for a 503 (the fail-closed answer to an outage) and `info`
 * otherwise. When the level would drop the line, nothing else is done: a service logging at
 * `warn` or `silent` pays one header and one listener per request, not pino-http's child
 * logger, serializers and redaction (about 8% of a gateway call's main-thread time).
 */
export function requestLog(logger: Logger, idOf: (header: string | string[] | undefined) => string) {
  return (req: IncomingMessage, res: ServerResponse, next: () => void): void => {
    const id = idOf(req.headers['x-request-id']);
    res.setHeader('X-Request-Id', id);
    (req as IncomingMessage & { id?: string }).id = id;
    if (!logger.isLevelEnabled('error')) {
      next();
      return;
    }
    const started = performance.now();
    res.once('close', () => {
      const level = res.statusCode === 503 ? 'warn' : res.statusCode >= 500 ? 'error' : 'info';
      if (!logger.isLevelEnabled(level)) return;
      logger[level](
        {
          req: { id, method: req.method, path: loggablePath((req.url ?? '').split('?')[0]) },
          res: { status: res.statusCode },
          responseTime: Math.round(performance.now() - started),
        },
        res.writableFinished ? 'request completed' : 'request aborted',
      );
    });
    next();
  };
}
