import { loadConfig } from '@writ/config';
import { createLogger, createRuntime, runMain } from '@writ/platform';
import { createGatewayApp } from './connector-gateway.app';

/** `npm run start:gateway`: the connector gateway alone. */
runMain('connector-gateway', async () => {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const runtime = await createRuntime({ config, logger });
  const app = await createGatewayApp(runtime);
  await app.listen(config.gatewayPort, config.host);
  logger.info({ gateway: config.gatewayUrl, port: config.gatewayPort }, 'connector gateway listening');
  return {
    logger,
    stop: async () => {
      await app.close();
      await runtime.close();
    },
  };
});
