import { loadConfig, withdrawSecretVariables } from '@writ/config';
import { createLogger, createRuntime, listenOn, runMain, stopServices, stopTimeoutOf } from '@writ/platform';
import { createGatewayApp } from './connector-gateway.app';

/** `npm run start:gateway`: the connector gateway alone. */
runMain('connector-gateway', async () => {
  const config = loadConfig();
  // Read: no child process (the embedded PostgreSQL) inherits them.
  withdrawSecretVariables();
  const logger = createLogger(config.logLevel);
  const runtime = await createRuntime({ config, logger, service: 'connector-gateway' });
  const app = await createGatewayApp(runtime);
  await listenOn(app, config.host, config.gatewayPort, 'WRIT_GATEWAY_PORT');
  logger.info({ gateway: config.gatewayUrl, port: config.gatewayPort }, 'connector gateway listening');
  return { logger, stop: () => stopServices([app], runtime), stopTimeoutMs: stopTimeoutOf(runtime) };
});
