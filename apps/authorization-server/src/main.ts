import { loadConfig, withdrawSecretVariables } from '@writ/config';
import { createLogger, createRuntime, loadWatchedPolicy, listenOn, runMain, stopServices, stopTimeoutOf } from '@writ/platform';
import { createAuthorizationServerApp } from './authorization-server.app';

/** `npm run start:authorization-server`: the authorization server alone. */
runMain('authorization-server', async () => {
  const config = loadConfig();
  // Read: no child process (the embedded PostgreSQL) inherits them.
  withdrawSecretVariables();
  const logger = createLogger(config.logLevel);
  const policy = await loadWatchedPolicy(config.policyPath, logger);
  const runtime = await createRuntime({ config, logger, service: 'authorization-server' });
  runtime.metrics.trackPolicyVersion(() => policy.current().version);
  const app = await createAuthorizationServerApp(runtime, policy);
  await listenOn(app, runtime.config.host, runtime.config.authPort, 'WRIT_AUTH_PORT');
  runtime.logger.info({ issuer: runtime.config.issuer, port: runtime.config.authPort, policy: policy.current().version }, 'authorization server listening');
  return { logger: runtime.logger, stop: () => stopServices([app], runtime), stopTimeoutMs: stopTimeoutOf(runtime) };
});
