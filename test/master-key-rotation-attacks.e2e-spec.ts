import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { accountSealContext, ConnectedAccounts, masterKeyRewrapDone } from '@writ/accounts';
import { legacyCredentialSealContext, rewrapConnectorCredentials, unsealCredential } from '@writ/connectors';
import { MasterKey } from '@writ/keys';
import { TemporarilyUnavailableError } from '@writ/oauth';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { Client, type Pool } from 'pg';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { CredentialBinding } from '../apps/connector-gateway/src/upstream/credential-binding.service';
import { eventually } from './support/eventually';
import { http, sendJson } from './support/oauth-client';
import { seedConnector, setConnectorCredential } from './support/seed';
import { masterKeyInstances } from './support/master-key-instances';
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
  const logs: string[] = [];
  const instances = masterKeyInstances({ db: () => db, logs });
  const { open, start, stop } = instances;

  /** Reads the database as its administrator, whatever instance runs. */
  const query = async <T extends Record<string, unknown>>(sql: string): Promise<T[]> => {
    const client = new Client({ connectionString: db.url });
    await client.connect();
    try {
      return (await client.query<T>(sql)).rows;
    } finally {
      await client.end();
    }
  };
  const rewrapEvents = async () =>
    (
      await query<{ data: { tables: Record<string, { rewrapped: number; skipped: number; unopened: number }> } }>(
        `SELECT data FROM audit_events WHERE type = 'master_key.rewrapped' ORDER BY seq`,
      )
    ).map((row) => row.data.tables);

  const databases: TestDatabase[] = [];

  // Each case rotates a database of its own.
  beforeEach(async () => {
    db = await createTestDatabase();
    databases.push(db);
  });
  afterAll(async () => {
    await instances.closeAll();
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
    expect((await rewrapEvents()).map((tables) => tables.connected_accounts)).toEqual([{ rewrapped: 0, skipped: 1, unopened: 0 }]);
    await stop(second);
    // Step 3 of the procedure: restart, and a new event means something is left under A.
    const third = await start(KEY_B, [KEY_A]);
    expect((await rewrapEvents()).map((tables) => tables.connected_accounts)).toEqual([
      { rewrapped: 0, skipped: 1, unopened: 0 },
      { rewrapped: 0, skipped: 1, unopened: 0 },
    ]);
    const [bob] = (await third.runtime.pool.query<{ tokens_sealed: Buffer }>(`SELECT tokens_sealed FROM connected_accounts WHERE user_subject = 'bob'`)).rows;
    expect(a.unseal(bob.tokens_sealed, context).length).toBeGreaterThan(0);
    // Once the lease is over, the next start re-seals it (and says so).
    await third.runtime.pool.query(`UPDATE connected_accounts SET refresh_lease_holder = NULL, refresh_lease_expires_at = NULL`);
    await stop(third);
    const fourth = await start(KEY_B, [KEY_A]);
    expect((await rewrapEvents()).map((tables) => tables.connected_accounts)[2]).toEqual({ rewrapped: 1, skipped: 0, unopened: 0 });
    await stop(fourth);
  }, 60_000);

  it('a large table: the services serve while it is re-sealed in batches with progress logged, and a shutdown stops it between rows', async () => {
    const a = new MasterKey(KEY_A);
    const b = new MasterKey(KEY_B);
    const first = await start(KEY_A);
    await seedConnector(first.runtime.pool, 'codehost', undefined, 'http://127.0.0.1:9');
    // More links than a batch holds (500), each sealed under A.
    const ids = Array.from({ length: 1201 }, (_, index) => `link-${String(index).padStart(4, '0')}`);
    await first.runtime.pool.query(
      `INSERT INTO connect_links (id, connector_id, user_issuer, user_subject, created_by, expires_at, opened_at, verifier_sealed)
       SELECT id, 'codehost', $3, 'carol', 'test', now() + interval '10 minutes', now(), sealed FROM unnest($1::text[], $2::bytea[]) AS t(id, sealed)`,
      [ids, ids.map((id) => a.seal(`verifier-of-${id}`, `writ/connect-link/v1\n${id}`)), IDP],
    );
    await stop(first);
    const underB = async () =>
      (await query<{ id: string; verifier_sealed: Buffer }>('SELECT id, verifier_sealed FROM connect_links')).filter((row) => {
        try {
          return b.unseal(row.verifier_sealed, `writ/connect-link/v1\n${row.id}`).length > 0;
        } catch {
          return false;
        }
      }).length;

    // Someone holds the first row of the second batch (a long transaction): the re-seal waits on it.
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM connect_links WHERE id = 'link-0500' FOR UPDATE`);
      logs.length = 0;
      const starting = startTestServices({
        db,
        admin: createAdminApp,
        // Its row lock waits longer than the start may take.
        env: { WRIT_MASTER_KEY: KEY_B.toString('base64'), WRIT_MASTER_KEY_PREVIOUS: KEY_A.toString('base64'), WRIT_DB_LOCK_TIMEOUT_MS: '60000' },
        logSink: (line) => logs.push(line),
      });
      let timer: NodeJS.Timeout | undefined;
      const started = await Promise.race([starting, new Promise<'blocked'>((resolve) => (timer = setTimeout(() => resolve('blocked'), 10_000)))]);
      clearTimeout(timer);
      if (started === 'blocked') {
        await holder.query('ROLLBACK');
        await starting.then((services) => services.close());
      }
      expect(started).not.toBe('blocked');
      const second = started as TestServices;
      open.push(second);
      expect((await http(`${second.authUrl}/oauth2/jwks`)).status).toBe(200);
      const progress = () =>
        logs.map((line) => JSON.parse(line) as { msg: string; table?: string; rewrapped?: number }).filter((line) => /^re-sealing values/.test(line.msg));
      expect(
        (await eventually(progress, (lines) => lines.some((line) => line.table === 'connect_links'))).filter((line) => line.table === 'connect_links'),
      ).toEqual([expect.objectContaining({ rewrapped: 500 })]);
      // The shutdown stops it before the next row (after the one it waits for, if it got there), and waits for that.
      const closing = stop(second);
      await new Promise((resolve) => setTimeout(resolve, 200));
      await holder.query('ROLLBACK');
      await closing;
      const done = await underB();
      expect([500, 501]).toContain(done);
      const [stopped] = await rewrapEvents();
      expect(stopped.connect_links).toMatchObject({ rewrapped: done, skipped: 0 });
    } finally {
      await holder.end();
    }
    // The next start goes on from there; the logs never hold a verifier.
    const third = await start(KEY_B, [KEY_A]);
    expect(await underB()).toBe(1201);
    expect((await rewrapEvents())[1].connect_links).toEqual({ rewrapped: 1201 - (await rewrapEvents())[0].connect_links.rewrapped, skipped: 0, unopened: 0 });
    expect(logs.join('\n')).not.toContain('verifier-of-');
    await stop(third);
  }, 90_000);

  it('a row held by a long transaction past the lock timeout: left for the next start, the rows after it re-sealed', async () => {
    const a = new MasterKey(KEY_A);
    const b = new MasterKey(KEY_B);
    const first = await start(KEY_A);
    await seedConnector(first.runtime.pool, 'codehost', undefined, 'http://127.0.0.1:9');
    const ids = ['link-a', 'link-b', 'link-c'];
    await first.runtime.pool.query(
      `INSERT INTO connect_links (id, connector_id, user_issuer, user_subject, created_by, expires_at, opened_at, verifier_sealed)
       SELECT id, 'codehost', $3, 'dave', 'test', now() + interval '10 minutes', now(), sealed FROM unnest($1::text[], $2::bytea[]) AS t(id, sealed)`,
      [ids, ids.map((id) => a.seal(`verifier-of-${id}`, `writ/connect-link/v1\n${id}`)), IDP],
    );
    await stop(first);
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM connect_links WHERE id = 'link-b' FOR UPDATE`);
      const second = await startTestServices({
        db,
        env: { WRIT_MASTER_KEY: KEY_B.toString('base64'), WRIT_MASTER_KEY_PREVIOUS: KEY_A.toString('base64'), WRIT_DB_LOCK_TIMEOUT_MS: '300' },
      });
      open.push(second);
      await masterKeyRewrapDone(second.runtime);
      await holder.query('ROLLBACK');
      expect((await rewrapEvents()).map((tables) => tables.connect_links)).toEqual([{ rewrapped: 2, skipped: 1, unopened: 0 }]);
      const rows = await query<{ id: string; verifier_sealed: Buffer }>('SELECT id, verifier_sealed FROM connect_links ORDER BY id');
      const opensUnderB = rows.map((row) => {
        try {
          return [row.id, b.unseal(row.verifier_sealed, `writ/connect-link/v1\n${row.id}`).length > 0];
        } catch {
          return [row.id, false];
        }
      });
      expect(opensUnderB).toEqual([
        ['link-a', true],
        ['link-b', false],
        ['link-c', true],
      ]);
      await stop(second);
    } finally {
      await holder.end();
    }
  }, 60_000);

  it('the rolling variant: its first restart (A current, B previous) changes nothing and records no re-seal', async () => {
    const a = new MasterKey(KEY_A);
    const first = await start(KEY_A);
    await seedConnector(first.runtime.pool, 'payments', undefined, 'http://127.0.0.1:9');
    await setConnectorCredential(first.runtime.pool, a, 'payments', { type: 'bearer', token: 'sk_rolling_value_4b1e' });
    await stop(first);
    const sealed = async () =>
      query<{ value: Buffer }>(
        `SELECT private_sealed AS value FROM signing_keys UNION ALL SELECT credential_sealed FROM connectors WHERE credential_sealed IS NOT NULL ORDER BY 1`,
      );
    const before = await sealed();
    expect(before).toHaveLength(3);

    // Every instance learns B first: nothing was sealed under B, so there is nothing to re-seal.
    const [one, two] = await Promise.all([start(KEY_A, [KEY_B]), start(KEY_A, [KEY_B])]);
    await Promise.all([stop(one), stop(two)]);
    expect(await rewrapEvents()).toEqual([]);
    expect(await sealed()).toEqual(before);

    // Then B current, A previous: everything is re-sealed, once.
    const three = await start(KEY_B, [KEY_A]);
    expect(await rewrapEvents()).toEqual([
      {
        signing_keys: { rewrapped: 2, skipped: 0, unopened: 0 },
        connectors: { rewrapped: 1, skipped: 0, unopened: 0 },
        connect_links: { rewrapped: 0, skipped: 0, unopened: 0 },
        connected_accounts: { rewrapped: 0, skipped: 0, unopened: 0 },
      },
    ]);
    await stop(three);
  }, 60_000);

  it('an admin setting a credential, or a refresh storing tokens, between the re-seal reading a row and writing it: theirs is kept', async () => {
    const a = new MasterKey(KEY_A);
    const rotated = new MasterKey(KEY_B, [KEY_A]);
    const services = await start(KEY_A);
    const { pool } = services.runtime;
    await seedConnector(pool, 'codehost', undefined, 'http://127.0.0.1:9');
    const credential = {
      type: 'oauth2_authorization_code' as const,
      authorization_url: 'http://127.0.0.1:9/auth',
      token_url: TOKEN_URL,
      client_id: 'writ-upstream',
      client_secret: 'upstream-secret-race-0a9c',
      scopes: ['repo:read'],
    };
    await setConnectorCredential(pool, a, 'codehost', credential);
    const contextOf = (subject: string) => accountSealContext('codehost', TOKEN_URL, { issuer: IDP, subject });
    for (const subject of ['erin', 'frank']) {
      await pool.query(
        `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed)
         VALUES ($1, 'codehost', $2, $3, 'active', '{repo:read}', $4)`,
        [randomUUID(), IDP, subject, a.seal(JSON.stringify({ access_token: `at_${subject}`, refresh_token: `rt_${subject}` }), contextOf(subject))],
      );
    }
    /** The pool, with `meanwhile` run once right after the re-seal's first read. */
    const between = (meanwhile: () => Promise<void>): Pool => {
      let armed = true;
      return new Proxy(pool, {
        get: (target, property) =>
          property === 'query'
            ? async (...args: Parameters<Pool['query']>) => {
                const result = await (target.query as (...query: unknown[]) => Promise<unknown>)(...args);
                if (armed && /^\s*SELECT/.test(String(args[0]))) {
                  armed = false;
                  await meanwhile();
                }
                return result;
              }
            : Reflect.get(target, property),
      });
    };

    // The admin sets a new credential (on an instance already under B) while the re-seal holds the old one.
    const replacement = { ...credential, client_secret: 'upstream-secret-race-new-5e7b' };
    const connectors = await rewrapConnectorCredentials(
      between(() => setConnectorCredential(pool, rotated, 'codehost', replacement)),
      rotated,
    );
    expect(connectors).toEqual({ rewrapped: 0, skipped: 1, unopened: [] });
    const [row] = (await pool.query<{ credential_sealed: Buffer }>(`SELECT credential_sealed FROM connectors WHERE id = 'codehost'`)).rows;
    expect(unsealCredential(new MasterKey(KEY_B), 'codehost', 'http://127.0.0.1:9', row.credential_sealed)).toEqual(replacement);

    // Erin's refresh stores new tokens meanwhile; Frank's takes its lease meanwhile and stores after the re-seal's write.
    const holder = randomUUID();
    const refreshed = (subject: string) =>
      rotated.seal(JSON.stringify({ access_token: `at2_${subject}`, refresh_token: `rt2_${subject}` }), contextOf(subject));
    const accounts = Object.assign(
      Object.create(Object.getPrototypeOf(services.apps[0].get(ConnectedAccounts)) as object),
      services.apps[0].get(ConnectedAccounts),
      {
        master: rotated,
        pool: between(async () => {
          await pool.query(`UPDATE connected_accounts SET tokens_sealed = $1 WHERE user_subject = 'erin'`, [refreshed('erin')]);
          await pool.query(
            `UPDATE connected_accounts SET refresh_lease_holder = $1, refresh_lease_expires_at = now() + interval '30 seconds' WHERE user_subject = 'frank'`,
            [holder],
          );
        }),
      },
    ) as ConnectedAccounts;
    expect(await accounts.rewrapConnectedAccounts()).toEqual({ rewrapped: 0, skipped: 2, unopened: [] });
    // Frank's refresh stores what it refreshed, comparing the sealed value it read (the one under A).
    const [frankBefore] = (await pool.query<{ tokens_sealed: Buffer }>(`SELECT tokens_sealed FROM connected_accounts WHERE user_subject = 'frank'`)).rows;
    const stored = await pool.query(
      `UPDATE connected_accounts SET tokens_sealed = $3, refresh_lease_holder = NULL, refresh_lease_expires_at = NULL
        WHERE user_subject = 'frank' AND refresh_lease_holder = $1 AND tokens_sealed = $2`,
      [holder, frankBefore.tokens_sealed, refreshed('frank')],
    );
    expect(stored.rowCount).toBe(1);
    expect(a.unseal(frankBefore.tokens_sealed, contextOf('frank')).toString()).toContain('rt_frank');
    const tokens = (
      await pool.query<{ user_subject: string; tokens_sealed: Buffer }>(`SELECT user_subject, tokens_sealed FROM connected_accounts ORDER BY user_subject`)
    ).rows;
    expect(tokens.map((account) => JSON.parse(rotated.unseal(account.tokens_sealed, contextOf(account.user_subject)).toString()).refresh_token)).toEqual([
      'rt2_erin',
      'rt2_frank',
    ]);
    await stop(services);
  }, 60_000);

  it('an instance left on the old key alone, after a signing key rotation elsewhere: refuses what it cannot verify as unavailable, says why, leaks nothing', async () => {
    const old = await start(KEY_A);
    // Behind one load balancer: the same issuer.
    const rotated = await start(KEY_B, [KEY_A], { WRIT_ISSUER: old.issuer });
    // Twice: the first promotes the `next` key the old instance made (and holds); the second, one made under B.
    await sendJson('POST', `${rotated.adminUrl}/v1/keys/rotate`, undefined, rotated.adminToken);
    const rotation = await sendJson('POST', `${rotated.adminUrl}/v1/keys/rotate`, undefined, rotated.adminToken);
    expect(rotation.status).toBe(201);
    const now = Math.floor(Date.now() / 1000);
    const signed = await rotated.runtime.signingKeys.sign({ sub: 'writ', jti: randomUUID(), iat: now, exp: now + 300 }, { typ: 'at+jwt' });
    expect(signed.kid).toBe(rotation.body.kid);
    // The new key was sealed under B: the old instance cannot load it, and says so rather than calling the token invalid.
    await new Promise((resolve) => setTimeout(resolve, 5_100));
    const refused = await old.runtime.signingKeys.verify(signed.token, { typ: 'at+jwt' }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(TemporarilyUnavailableError);
    // Over HTTP: a valid tasks token of the new key is 503 with Retry-After there, not 401.
    const tasksToken = await rotated.runtime.signingKeys.sign(
      { sub: 'orchestrator', jti: randomUUID(), iat: now, exp: now + 300, aud: `${old.issuer}/v1/tasks`, scope: 'tasks' },
      { typ: 'at+jwt' },
    );
    const listed = await http(`${old.authUrl}/v1/tasks/${randomUUID()}`, { headers: { authorization: `Bearer ${tasksToken.token}` } });
    expect([listed.status, listed.headers.get('retry-after') !== null, listed.body.error]).toEqual([503, true, 'temporarily_unavailable']);
    // The log says why (no value of any key); the instance still verifies what its own keys signed.
    expect(logs.some((line) => /sealed value could not be opened/.test(line))).toBe(true);
    for (const key of [KEY_A, KEY_B]) expect(logs.join('\n')).not.toContain(key.toString('base64'));
    const own = await old.runtime.signingKeys.sign({ sub: 'writ', jti: randomUUID(), iat: now, exp: now + 300 }, { typ: 'at+jwt' });
    await expect(old.runtime.signingKeys.verify(own.token, { typ: 'at+jwt' })).resolves.toBeDefined();
    await Promise.all([stop(old), stop(rotated)]);
  }, 60_000);

  it('the current key given as previous too: said in a warning, nothing re-sealed, no key in the log', async () => {
    logs.length = 0;
    const services = await start(KEY_A, [KEY_A]);
    const warnings = logs.map((line) => JSON.parse(line) as { level: number; msg: string }).filter((line) => /WRIT_MASTER_KEY_PREVIOUS repeats/.test(line.msg));
    expect(warnings).toHaveLength(1);
    expect(await rewrapEvents()).toEqual([]);
    expect(logs.join('\n')).not.toContain(KEY_A.toString('base64'));
    await stop(services);
  }, 60_000);

  it('a credential sealed before binding, re-sealed by the rotation while the gateway binds it: the gateway still binds it', async () => {
    const a = new MasterKey(KEY_A);
    const first = await start(KEY_A);
    const { pool } = first.runtime;
    await seedConnector(pool, 'legacy', undefined, 'http://127.0.0.1:9');
    const legacy = { type: 'bearer', token: 'sk_legacy_rotation_31f0' };
    await pool.query(`UPDATE connectors SET credential_type = 'bearer', credential_sealed = $1 WHERE id = 'legacy'`, [
      a.seal(JSON.stringify(legacy), legacyCredentialSealContext('legacy')),
    ]);
    await stop(first);
    // A gateway under B (A previous) binds it; the rotation's re-seal lands between the binding's read and its write.
    const gateway = await startTestServices({
      db,
      gateway: createGatewayApp,
      env: { WRIT_MASTER_KEY: KEY_B.toString('base64'), WRIT_MASTER_KEY_PREVIOUS: KEY_A.toString('base64') },
    });
    open.push(gateway);
    await masterKeyRewrapDone(gateway.runtime);
    const rotated = gateway.runtime.masterKey;
    await gateway.runtime.pool.query(`UPDATE connectors SET credential_sealed = $1 WHERE id = 'legacy'`, [
      a.seal(JSON.stringify(legacy), legacyCredentialSealContext('legacy')),
    ]);
    const binding = gateway.apps[1].get(CredentialBinding);
    let armed = true;
    const racing = Object.assign(Object.create(Object.getPrototypeOf(binding) as object), binding, {
      pool: new Proxy(gateway.runtime.pool, {
        get: (target, property) =>
          property === 'query'
            ? async (...args: Parameters<Pool['query']>) => {
                const result = await (target.query as (...query: unknown[]) => Promise<unknown>)(...args);
                if (armed) {
                  armed = false;
                  expect(await rewrapConnectorCredentials(target, rotated)).toMatchObject({ rewrapped: 1 });
                }
                return result;
              }
            : Reflect.get(target, property),
      }),
    }) as CredentialBinding;
    expect((await racing.bindLegacyCredentials()).rebound).toEqual(['legacy']);
    const [row] = (await gateway.runtime.pool.query<{ credential_sealed: Buffer }>(`SELECT credential_sealed FROM connectors WHERE id = 'legacy'`)).rows;
    expect(unsealCredential(rotated, 'legacy', 'http://127.0.0.1:9', row.credential_sealed)).toEqual(legacy);
    await stop(gateway);
  }, 60_000);
});
