import { clientAuthFields } from '@writ/testing';
import { createTask, exchangeFields, seedWorld, World } from './support/grant-flow';
import { postForm } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

/**
 * RFC 7009 and 7662 on an instance that cannot read the signing keys right now (the database
 * read of `signing_keys` fails, or a key is sealed under a master key it lacks), asked about a
 * credential signed by a key another instance rotated in meanwhile. It cannot tell whether the
 * token is one of its own: a revocation must not be answered `200` (the client would believe
 * it done) with nothing revoked, nor introspection `active: false` as if the token were
 * invalid. Both are unavailability: `503` with `Retry-After`.
 */
describe('revocation and introspection while the signing keys cannot be read', () => {
  let services: TestServices;
  let second: TestServices;
  let world: World;

  beforeAll(async () => {
    services = await startTestServices();
    second = await startSecondInstance(services);
    world = await seedWorld(services.runtime.pool);
  });
  afterAll(async () => {
    await second.close();
    await services.close();
  });

  it('answers 503 with Retry-After, revokes nothing it did not say, and says nothing is inactive', async () => {
    // The first instance's reads of the keys fail from now on (its other queries still work).
    const pool = services.runtime.pool;
    const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
    const failing = (text: unknown, ...rest: unknown[]): unknown =>
      typeof text === 'string' && text.includes('FROM signing_keys') ? Promise.reject(new Error('connection terminated unexpectedly')) : query(text, ...rest);
    Object.assign(pool, { query: failing });
    try {
      // Twice on the second instance: the second promotes a key the first instance never read.
      await second.runtime.signingKeys.rotate();
      const { kid } = await second.runtime.signingKeys.rotate();
      const task = await createTask(services, world.orchestrator);
      // Both instances answer for one issuer: the exchange goes to the second one's own address.
      const exchanged = await postForm(`${second.authUrl}/oauth2/token`, {
        ...exchangeFields(task.task_token),
        ...(await clientAuthFields(world.agent.id, world.agent.key, second.issuer)),
      });
      expect(exchanged.status).toBe(200);
      const token: string = exchanged.body.access_token;
      expect(JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString()).kid).toBe(kid);
      await new Promise((resolve) => setTimeout(resolve, 200));

      const revoked = await postForm(`${services.issuer}/oauth2/revoke`, {
        token,
        ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
      });
      expect([revoked.status, revoked.headers.get('retry-after') !== null, revoked.body?.error]).toEqual([503, true, 'temporarily_unavailable']);
      const { rows } = await second.runtime.pool.query<{ revoked_at: Date | null }>('SELECT revoked_at FROM access_tokens WHERE jti = $1', [
        JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).jti,
      ]);
      expect(rows[0].revoked_at).toBeNull();

      const introspected = await postForm(`${services.issuer}/oauth2/introspect`, {
        token,
        ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)),
      });
      expect([introspected.status, introspected.headers.get('retry-after') !== null, introspected.body?.error]).toEqual([503, true, 'temporarily_unavailable']);
    } finally {
      Object.assign(pool, { query });
    }
  });
});
