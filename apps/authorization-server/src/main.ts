import { loadConfig } from '@writ/config';
import { createLogger, createRuntime, loadWatchedPolicy, runMain } from '@writ/platform';
import { createAuthorizationServerApp } from './authorization-server.app';

/** `npm run start:authorization-server`: the authorization server alone. */
runMain('authorization-server', async () => {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const policy = await loadWatchedPolicy(config.policyPath, logger);
  const runtime = await createRuntime({ config, logger });
  const app = await createAuthorizationServerApp(runtime, policy);
  await app.listen(runtime.config.authPort, runtime.config.host);
  runtime.logger.info({ issuer: runtime.config.issuer, port: runtime.config.authPort, policy: policy.current().version }, 'authorization server listening');
  return {
    logger: runtime.logger,
    stop: async () => {
      await app.close();
      await runtime.close();
    },
  };
});
