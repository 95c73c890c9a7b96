import { clientAssertion } from '@writ/testing';
import { ClientAuthenticator } from '../apps/authorization-server/src/client-auth/client-authenticator.service';
import { seedWorld, World } from './support/grant-flow';
import { postForm } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/**
 * A client assertion is accepted until `exp` plus the clock tolerance by the clock of the
 * instance that reads it, but its spent `jti` was purged as soon as that instant passed by
 * the clock of the database (`expires_at < now()`). An instance whose clock runs behind the
 * database's then accepted the purged assertion again: a replay. The purge keeps a margin for
 * such differences (as DPoP proofs' jtis are kept 60 s past their acceptance).
 */
describe('spent client assertion jtis against the purge', () => {
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    services = await startTestServices();
    world = await seedWorld(services.runtime.pool);
  });
  afterAll(() => services.close());

  it('keeps a spent jti past the end of its acceptance by the database clock, for instances whose clock runs behind', async () => {
    // Accepted thanks to the 30 s tolerance: its acceptance ends about one second from now.
    const exp = Math.floor(Date.now() / 1000) - 29;
    const assertion = await clientAssertion(world.orchestrator.id, world.orchestrator.key, services.issuer, { claims: { exp, iat: exp - 60 } });
    const fields = {
      grant_type: 'client_credentials',
      scope: 'tasks',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    };
    expect((await postForm(`${services.issuer}/oauth2/token`, fields)).status).toBe(200);
    const { jti } = JSON.parse(Buffer.from(assertion.split('.')[1], 'base64url').toString()) as { jti: string };

    // Past the end of its acceptance by the database's clock, a purge runs (every instance runs one a minute).
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    await services.apps[0].get(ClientAuthenticator).purgeExpiredJtis();
    const { rows } = await services.runtime.pool.query('SELECT 1 FROM client_assertion_jtis WHERE client_id = $1 AND jti = $2', [world.orchestrator.id, jti]);
    expect(rows).toHaveLength(1);
  });
});
