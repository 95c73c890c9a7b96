import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import type { Logger } from 'pino';
import { WritExceptionFilter } from './http-exception.filter';

/**
 * Serves the requests `matches` selects with `handle`, ahead of Nest's router: after the common
 * middlewares and the app's body parsers (so the gate, request id, metrics, request log and
 * headers apply as to every route), with its errors answered by the same exception filter as a
 * Nest route's. For the hot endpoints only (the gateway's calls, the token endpoint). Whatever
 * `matches` leaves (other methods, other paths) goes on to Nest.
 */
export function directRoute(
  app: NestExpressApplication,
  logger: Logger,
  matches: (req: Request) => boolean,
  handle: (req: Request, res: Response) => Promise<void>,
): void {
  const filter = new WritExceptionFilter(logger);
  app.use((req: Request, res: Response, next: NextFunction) => {
    if (!matches(req)) {
      next();
      return;
    }
    handle(req, res).catch((error: unknown) => filter.catch(error, new ExecutionContextHost([req, res, next])));
  });
}
