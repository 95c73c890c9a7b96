import { DynamicModule, INestApplication, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import { WritExceptionFilter } from './http-exception.filter';
import { requestLog } from './request-log';
import type { Runtime } from './runtime';

/** Options of {@link createHttpApp}. */
export interface HttpAppOptions {
  /** Name in log lines, e.g. `authorization-server`. */
  name: string;
  /** Installs this app's body parsers (each app parses what its endpoints accept, within limits). */
  configure?: (app: NestExpressApplication) => void;
}

/**
 * Creates a Nest app on Express with Writ's common HTTP behaviour: request logs without
 * credentials, a request id, no `X-Powered-By`, `Cache-Control: no-store` unless an endpoint
 * sets its own, the one exception filter, and no body parsing unless the app asks for it.
 */
export async function createHttpApp(module: Type<unknown> | DynamicModule, runtime: Runtime, options: HttpAppOptions): Promise<INestApplication> {
  const logger = runtime.logger.child({ service: options.name });
  const app = await NestFactory.create<NestExpressApplication>(module, {
    bodyParser: false,
    logger: false,
    abortOnError: false,
  });
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.use(requestLog(logger));
  app.use((_req: Request, res: Response, next: NextFunction) => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // Every answer is per caller and many carry credentials: nothing is cached unless an
    // endpoint says so (discovery and JWKS do; the gateway forwards the upstream's header).
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  options.configure?.(app);
  app.useGlobalFilters(new WritExceptionFilter(logger));
  return app;
}
