import type { INestApplication } from '@nestjs/common';
import type { ActivePolicy } from '@writ/policy';
import { createHttpApp, Runtime } from '@writ/platform';
import { ConnectorGatewayModule } from './connector-gateway.module';

/**
 * Builds the connector gateway app (not yet listening). It parses no body globally: the
 * proxy reads each body itself, within `WRIT_GATEWAY_BODY_LIMIT`, to forward exactly the
 * bytes it checked. The policy is not consulted here (it decided at issuance); the
 * parameter keeps every service factory alike.
 */
export function createGatewayApp(runtime: Runtime, _policy?: ActivePolicy): Promise<INestApplication> {
  return createHttpApp(ConnectorGatewayModule.forRoot(runtime), runtime, { name: 'connector-gateway' });
}
