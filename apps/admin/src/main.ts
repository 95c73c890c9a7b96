import { loadConfig, withdrawSecretVariables } from '@writ/config';
import { createLogger, createRuntime, ensureBootstrapAdminToken, loadWatchedPolicy, listenOn, runMain, stopServices, stopTimeoutOf } from '@writ/platform';
import { createAdminApp } from './admin.app';

/** `npm run start:admin`: the admin API alone. */
runMain('admin', async () => {
  const config = loadConfig();
  // Read: no child process (the embedded PostgreSQL) inherits them.
  withdrawSecretVariables();
  const logger = createLogger(config.logLevel);
  const policy = await loadWatchedPolicy(config.policyPath, logger);
  const runtime = await createRuntime({ config, logger, service: 'admin' });
  runtime.metrics.trackPolicyVersion(() => policy.current().version);
  const bootstrap = await ensureBootstrapAdminToken(runtime);
  const app = await createAdminApp(runtime, policy);
  await listenOn(app, runtime.config.host, runtime.config.adminPort, 'WRIT_ADMIN_PORT');
  runtime.logger.info(
    {
      port: runtime.config.adminPort,
      host: runtime.config.host,
      console: `http://${runtime.config.host}:${runtime.config.adminPort}/console/`,
      policy: policy.current().version,
      admin_token: bootstrap.file ? `written to ${bootstrap.file}` : 'from WRIT_ADMIN_TOKEN',
    },
    'admin API listening',
  );
  if (bootstrap.file) process.stdout.write(`writ: the admin token is in ${bootstrap.file}\n`);
  return { logger: runtime.logger, stop: () => stopServices([app], runtime), stopTimeoutMs: stopTimeoutOf(runtime) };
});
