import { createAuthorizationServerApp } from '../../apps/authorization-server/src/authorization-server.app';
import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { startBenchEnvironment } from './bench-environment';
import { serveParent } from './server-stats';

/** What a joining instance tells its parent once it listens. */
export interface BenchInstanceReady {
  tokenUrl: string;
  gatewayUrl: string;
}

/**
 * One more Writ instance (authorization server and gateway) over the bench server's database,
 * sharing its issuer and gateway URL as instances behind one load balancer do: the scaling
 * benchmark. Arguments: auth port, gateway port, database URL, issuer, gateway URL.
 */
async function main(): Promise<void> {
  const [authPort, gatewayPort, databaseUrl, issuer, sharedGatewayUrl] = process.argv.slice(2);
  const env = await startBenchEnvironment(
    { auth: Number(authPort), gateway: Number(gatewayPort), admin: Number(gatewayPort) + 1 },
    { databaseUrl, issuer, gatewayUrl: sharedGatewayUrl },
  );
  const app = await createAuthorizationServerApp(env.runtime, env.policy);
  await app.listen(Number(authPort), '127.0.0.1');
  const gateway = await createGatewayApp(env.runtime, env.policy);
  await gateway.listen(Number(gatewayPort), '127.0.0.1');
  const ready: BenchInstanceReady = { tokenUrl: `http://127.0.0.1:${authPort}/oauth2/token`, gatewayUrl: `http://127.0.0.1:${gatewayPort}` };
  process.send!(ready);
  serveParent(env.runtime.pool, async () => {
    await gateway.close();
    await app.close();
    await env.close();
  });
}

main().catch((error: unknown) => {
  console.error('bench instance failed:', error instanceof Error ? error.message : error);
  process.exit(1);
});
