import { createRuntime, runMain } from '@writ/platform';
import { ActivePolicy } from '@writ/policy';
import { createAuthorizationServerApp } from './authorization-server.app';

/** `npm run start:authorization-server`: the authorization server alone. */
runMain('authorization-server', async () => {
  const runtime = await createRuntime();
  const policy = await ActivePolicy.load(runtime.config.policyPath);
  const app = await createAuthorizationServerApp(runtime, policy);
  await app.listen(runtime.config.authPort, runtime.config.host);
  runtime.logger.info({ issuer: runtime.config.issuer, port: runtime.config.authPort, policy: policy.describe().version }, 'authorization server listening');
  return { logger: runtime.logger, stop: async () => { await app.close(); await runtime.close(); } };
});
