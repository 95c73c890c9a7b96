import type { INestApplication } from '@nestjs/common';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { ActivePolicy } from '@writ/policy';
import { createHttpApp, directRoute, Runtime } from '@writ/platform';
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
 * The proxied calls skip Nest's router ({@link directRoute}; routing a call through Nest cost
 * ~5% of it): {@link ProxyService} serves them as Nest's route (`ProxyController`, still there
 * for any form this test leaves to it) would.
 */
function mountProxy(app: NestExpressApplication, runtime: Runtime): void {
  const proxy = app.get(ProxyService);
  directRoute(
    app,
    runtime.logger.child({ service: NAME }),
    (req) => PROXIED.test(req.url),
    (req, res) => proxy.handle(req, res),
  );
}
