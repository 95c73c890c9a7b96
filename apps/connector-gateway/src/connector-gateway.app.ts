import type { INestApplication } from '@nestjs/common';
import type { ActivePolicy } from '@writ/policy';
import { createHttpApp, Runtime } from '@writ/platform';
import { ConnectorGatewayModule } from './connector-gateway.module';
import { ProxyService } from './proxy/proxy.service';

const NAME = 'connector-gateway';

/** The proxied calls, `ANY /connectors/{id}/{path}` (matched without case, as Express's router does). */
const PROXIED = /^\/connectors\/[^?]/i;

/**
 * Builds the connector gateway app (not yet listening). It parses no body globally: the
 * proxy reads each body itself, within `WRIT_GATEWAY_BODY_LIMIT`, to forward exactly the
 * bytes it checked. The proxied calls are served ahead of Express's router (`serveDirect`):
 * {@link ProxyService} serves them as Nest's route (`ProxyController`, still there for any
 * form this test leaves to it) would. The policy is not consulted here (it decided at
 * issuance); the parameter keeps every service factory alike.
 */
export function createGatewayApp(runtime: Runtime, _policy?: ActivePolicy): Promise<INestApplication> {
  return createHttpApp(ConnectorGatewayModule.forRoot(runtime), runtime, {
    name: NAME,
    direct: (app) => {
      const proxy = app.get(ProxyService);
      return { matches: (req) => PROXIED.test(req.url ?? ''), handle: (req, res) => proxy.handle(req, res) };
    },
  });
}
