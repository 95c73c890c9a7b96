import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { accountSealContext } from '@writ/accounts';
import { MasterKey } from '@writ/keys';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { http } from './support/oauth-client';
import { seedConnector, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const KEY_A = Buffer.alloc(32, 31);
const KEY_B = Buffer.alloc(32, 32);
const IDP = 'https://idp.rotation-attacks.example';
const TOKEN_URL = 'http://127.0.0.1:9/token';

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
  const rewrapEvents = async (services: TestServices) =>
    (
      await services.runtime.pool.query<{ data: { tables: Record<string, { rewrapped: number; skipped: number; unopened: number }> } }>(
        `SELECT data FROM audit_events WHERE type = 'master_key.rewrapped' ORDER BY seq`,
      )
    ).rows.map((row) => row.data.tables);

  const databases: TestDatabase[] = [];

  // Each case rotates a database of its own.
  beforeEach(async () => {
    db = await createTestDatabase();
    databases.push(db);
  });
  afterAll(async () => {
    for (const services of open.splice(0)) await services.close().catch(() => undefined);
    for (const database of databases) await database.drop().catch(() => undefined);
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

  it('an account still under a refresh at the next start too: that start says so, the operator does not drop the key it needs', async () => {
    const a = new MasterKey(KEY_A);
    const first = await start(KEY_A);
    const { pool } = first.runtime;
    await seedConnector(pool, 'codehost', undefined, 'http://127.0.0.1:9');
    await setConnectorCredential(pool, a, 'codehost', {
      type: 'oauth2_authorization_code',
      authorization_url: 'http://127.0.0.1:9/auth',
      token_url: TOKEN_URL,
      client_id: 'writ-upstream',
      client_secret: 'upstream-secret-attacks-77d1',
      scopes: ['repo:read'],
    });
    const context = accountSealContext('codehost', TOKEN_URL, { issuer: IDP, subject: 'bob' });
    // Bob's account is refreshed often: a live lease at every start.
    await pool.query(
      `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, refresh_lease_holder, refresh_lease_expires_at)
       VALUES ($1, 'codehost', $2, 'bob', 'active', '{repo:read}', $3, $4, now() + interval '1 hour')`,
      [randomUUID(), IDP, a.seal(JSON.stringify({ access_token: 'at_bob', refresh_token: 'rt_bob' }), context), randomUUID()],
    );
    await stop(first);

    const second = await start(KEY_B, [KEY_A]);
    expect((await rewrapEvents(second)).map((tables) => tables.connected_accounts)).toEqual([{ rewrapped: 0, skipped: 1, unopened: 0 }]);
    await stop(second);
    // Step 3 of the procedure: restart, and a new event means something is left under A.
    const third = await start(KEY_B, [KEY_A]);
    expect((await rewrapEvents(third)).map((tables) => tables.connected_accounts)).toEqual([
      { rewrapped: 0, skipped: 1, unopened: 0 },
      { rewrapped: 0, skipped: 1, unopened: 0 },
    ]);
    const [bob] = (await third.runtime.pool.query<{ tokens_sealed: Buffer }>(`SELECT tokens_sealed FROM connected_accounts WHERE user_subject = 'bob'`)).rows;
    expect(a.unseal(bob.tokens_sealed, context).length).toBeGreaterThan(0);
    // Once the lease is over, the next start re-seals it (and says so).
    await third.runtime.pool.query(`UPDATE connected_accounts SET refresh_lease_holder = NULL, refresh_lease_expires_at = NULL`);
    await stop(third);
    const fourth = await start(KEY_B, [KEY_A]);
    expect((await rewrapEvents(fourth)).map((tables) => tables.connected_accounts)[2]).toEqual({ rewrapped: 1, skipped: 0, unopened: 0 });
    await stop(fourth);
  }, 60_000);
});
