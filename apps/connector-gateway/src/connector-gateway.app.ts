import type { INestApplication } from '@nestjs/common';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import type { ActivePolicy } from '@writ/policy';
import { createHttpApp, Runtime, WritExceptionFilter } from '@writ/platform';
import { ConnectorGatewayModule } from './connector-gateway.module';
import { ProxyService } from './proxy/proxy.service';

const NAME = 'connector-gateway';

/** The proxied calls, `ANY /connectors/{id}/{path}` (matched without case, as Express's router does). */
const PROXIED = /^\/connectors\/[^?]/i;

/**
 * Builds the connector gateway app (not yet listening). It parses no body globally: the
 * proxy reads each body itself, within `WRIT_GATEWAY_BODY_LIMIT`, to forward exactly the
 * bytes it checked. The policy is not consulted here (it decided at issuance); the
 * parameter keeps every service factory alike.
 */
export function createGatewayApp(runtime: Runtime, _policy?: ActivePolicy): Promise<INestApplication> {
  return createHttpApp(ConnectorGatewayModule.forRoot(runtime), runtime, { name: NAME, configure: (app) => mountProxy(app, runtime) });
}

/**
 * The proxied calls skip Nest's router: an Express handler after the common middlewares (gate,
 * request id and context, metrics, request log, headers) hands them to {@link ProxyService}
 * and its errors to the same exception filter, as Nest's route (`ProxyController`, still there
 * for any form this test leaves to it) would. Routing a call through Nest cost ~5% of it.
 */
function mountProxy(app: NestExpressApplication, runtime: Runtime): void {
  const proxy = app.get(ProxyService);
  const filter = new WritExceptionFilter(runtime.logger.child({ service: NAME }));
  app.use((req: Request, res: Response, next: NextFunction) => {
    if (!PROXIED.test(req.url)) {
      next();
      return;
    }
    proxy.handle(req, res).catch((error: unknown) => filter.catch(error, new ExecutionContextHost([req, res, next])));
  });
}
