import type { INestApplication } from '@nestjs/common';
import { loadConfig, withdrawSecretVariables } from '@writ/config';
import { createLogger, createRuntime, ensureBootstrapAdminToken, loadWatchedPolicy, listenOn, runMain, stopServices, stopTimeoutOf } from '@writ/platform';
import { createAdminApp } from '../../admin/src/admin.app';
import { createAuthorizationServerApp } from '../../authorization-server/src/authorization-server.app';
import { createGatewayApp } from '../../connector-gateway/src/connector-gateway.app';

/**
 * `npm start`: the three services in one process over one runtime (one pool, one audit
 * writer), on the embedded PostgreSQL unless `WRIT_DATABASE_URL` is set. For scaling, run
 * them separately (`npm run start:authorization-server`, `start:gateway`, `start:admin`).
 */
runMain('writ', async () => {
  const config = loadConfig();
  // Read: no child process (the embedded PostgreSQL) inherits them.
  withdrawSecretVariables();
  const logger = createLogger(config.logLevel);
  const policy = await loadWatchedPolicy(config.policyPath, logger);
  const runtime = await createRuntime({ config, logger, poolSize: 30 });
  runtime.metrics.trackPolicyVersion(() => policy.current().version);
  const bootstrap = await ensureBootstrapAdminToken(runtime);
  const apps: INestApplication[] = [];
  const services: Array<[string, typeof createAdminApp, number, string]> = [
    ['authorization server', createAuthorizationServerApp, config.authPort, 'WRIT_AUTH_PORT'],
    ['connector gateway', createGatewayApp, config.gatewayPort, 'WRIT_GATEWAY_PORT'],
    ['admin API', createAdminApp, config.adminPort, 'WRIT_ADMIN_PORT'],
  ];
  for (const [name, create, port, portVariable] of services) {
    const app = await create(runtime, policy);
    await listenOn(app, config.host, port, portVariable);
    apps.push(app);
    logger.info({ port, host: config.host }, `${name} listening`);
  }
  logger.info(
    {
      issuer: config.issuer,
      gateway: config.gatewayUrl,
      admin: `http://${config.host}:${config.adminPort}`,
      console: `http://${config.host}:${config.adminPort}/console/`,
      policy: policy.current().version,
      admin_token: bootstrap.file ? `written to ${bootstrap.file}` : 'from WRIT_ADMIN_TOKEN',
    },
    'Writ is ready',
  );
  if (bootstrap.file) process.stdout.write(`writ: the admin token is in ${bootstrap.file}\n`);
  return {
    logger,
    stop: () => stopServices(apps, runtime),
    stopTimeoutMs: stopTimeoutOf(runtime),
  };
});
