import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { http } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

const KEY_A = Buffer.alloc(32, 31);
const KEY_B = Buffer.alloc(32, 32);

/**
 * A database administrator (every table writable, no master key) and an operator's mistakes
 * against a master key rotation: the restarts it takes load what the database says, and the
 * operator reads the rotation's progress from its audit event.
 */
describe('master key rotation under attack', () => {
  let db: TestDatabase;
  const open: TestServices[] = [];
  const logs: string[] = [];

  const start = async (current: Buffer, previous: Buffer[] = []) => {
    const services = await startTestServices({
      db,
      admin: createAdminApp,
      env: {
        WRIT_MASTER_KEY: current.toString('base64'),
        ...(previous.length ? { WRIT_MASTER_KEY_PREVIOUS: previous.map((key) => key.toString('base64')).join(',') } : {}),
      },
      logSink: (line) => logs.push(line),
    });
    open.push(services);
    return services;
  };
  const stop = async (services: TestServices) => {
    open.splice(open.indexOf(services), 1);
    await services.close();
  };
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const services of open.splice(0)) await services.close().catch(() => undefined);
    await db?.drop();
  });

  it('a signing key row given the DBA public key: instances started for the rotation neither publish nor trust it', async () => {
    const first = await start(KEY_A);
    const kid = first.runtime.signingKeys.activeKid();
    const attacker = await generateKeyPair('ES256', { extractable: true });
    const attackerJwk = { ...(await exportJWK(attacker.publicKey)), kid, alg: 'ES256', use: 'sig' };
    // The private half stays sealed and untouched: only the public column, which nothing seals, is replaced.
    await first.runtime.pool.query('UPDATE signing_keys SET public_jwk = $2 WHERE kid = $1', [kid, attackerJwk]);
    await stop(first);

    // The restart of the rotation loads every key afresh.
    const second = await start(KEY_B, [KEY_A]);
    const now = Math.floor(Date.now() / 1000);
    const forged = await new SignJWT({ sub: 'attacker', jti: randomUUID() })
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
      .setIssuer(second.issuer)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(attacker.privateKey);
    await expect(second.runtime.signingKeys.verify(forged, { typ: 'at+jwt' })).rejects.toThrow();
    const jwks = await http(`${second.authUrl}/oauth2/jwks`);
    expect(jwks.status).toBe(200);
    expect((jwks.body.keys as { x: string }[]).map((key) => key.x)).not.toContain(attackerJwk.x);
    // The key itself still signs and verifies.
    const genuine = await second.runtime.signingKeys.sign({ sub: 'writ', jti: randomUUID(), iat: now, exp: now + 300 }, { typ: 'at+jwt' });
    await expect(second.runtime.signingKeys.verify(genuine.token, { typ: 'at+jwt' })).resolves.toBeDefined();
    await stop(second);
  }, 60_000);
});
