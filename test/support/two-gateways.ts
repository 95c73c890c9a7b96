import { createGatewayApp } from '../../apps/connector-gateway/src/connector-gateway.app';
import { seedWorld, World } from './grant-flow';
import { MockUpstream, startPaymentsUpstream } from './mock-upstreams';
import { setConnectorCredential } from './seed';
import { startSecondInstance, startTestServices, TestServices } from './test-services';

/** Two instances of one deployment, each with its gateway, over one database, and the payments upstream they call. */
export interface TwoGateways {
  first: TestServices;
  second: TestServices;
  world: World;
  upstream: MockUpstream;
  close(): Promise<void>;
}

/**
 * Starts the payments upstream (expecting `secret`), two instances with their gateways (behind
 * one `WRIT_GATEWAY_URL`), the seeded world, and the payments connector with `secret` as its
 * bearer credential.
 */
export async function startTwoGateways(secret: string): Promise<TwoGateways> {
  const upstream = await startPaymentsUpstream(secret);
  const first = await startTestServices({ gateway: createGatewayApp });
  const second = await startSecondInstance(first, { gateway: createGatewayApp });
  const world = await seedWorld(first.runtime.pool, upstream.url);
  await setConnectorCredential(first.runtime.pool, first.runtime.masterKey, 'payments', { type: 'bearer', token: secret });
  return {
    first,
    second,
    world,
    upstream,
    close: async () => {
      await second.close();
      await first.close();
      await upstream.close();
    },
  };
}
