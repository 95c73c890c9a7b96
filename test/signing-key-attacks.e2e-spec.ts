import { createHmac, createPublicKey, generateKeyPairSync, type JsonWebKey, randomUUID, sign } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from 'pg';
import { exportJWK } from 'jose';
import { STALE_KEYS_SIGNING_LIMIT_MS } from '@writ/keys';
import { TemporarilyUnavailableError } from '@writ/oauth';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, seedWorld, tasksToken, World } from './support/grant-flow';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';
import { startScratchPostgres, type ScratchPostgres } from '@writ/testing';

const b64 = (value: unknown): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const partsOf = (token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } => {
  const [header, claims] = token.split('.');
  return { header: JSON.parse(Buffer.from(header, 'base64url').toString('utf8')), claims: JSON.parse(Buffer.from(claims, 'base64url').toString('utf8')) };
};

/**
 * Writ's own signing keys and the tokens they sign, attacked: what a verifier caching the JWKS
 * sees across rotations (scheduled or not), and tokens forged or reshaped to make a verifier
 * trust a key the token names itself, another algorithm, or another kind of token.
 */
describe("Writ's signing keys and the tokens they sign under attack", () => {
  let services: TestServices;
  let world: World;
  let superuser: Client;
  /** Requests made to the attacker's key server (a verifier must never fetch `jku` or `x5u`). */
  const fetched: string[] = [];
  /** Every log line of the services, at level debug. */
  const logs: string[] = [];
  let attackerServer: Server;
  let attackerUrl: string;
  const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' });

  beforeAll(async () => {
    attackerServer = createServer((req, res) => {
      fetched.push(req.url ?? '');
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [{ ...attacker.publicKey.export({ format: 'jwk' }), kid: 'attacker', alg: 'ES256', use: 'sig' }] }));
    });
    await new Promise<void>((resolve) => attackerServer.listen(0, '127.0.0.1', resolve));
    attackerUrl = `http://127.0.0.1:${(attackerServer.address() as AddressInfo).port}`;
    // No scheduled rotation behind the tests' back: they call the scheduler themselves.
    services = await startTestServices({
      gateway: createGatewayApp,
      admin: createAdminApp,
      env: { WRIT_KEY_ROTATION_DAYS: '0' },
      logSink: (line) => logs.push(line),
    });
    world = await seedWorld(services.runtime.pool);
    superuser = new Client({ connectionString: services.db.url });
    await superuser.connect();
  });
  afterAll(async () => {
    await superuser.end();
    await services.close();
    attackerServer.closeAllConnections();
    await new Promise<void>((resolve) => attackerServer.close(() => resolve()));
  });

  const keyRows = async () => (await superuser.query<{ kid: string; status: string }>(`SELECT kid, status FROM signing_keys ORDER BY created_at, kid`)).rows;
  const kidWith = async (status: string) => (await keyRows()).find((row) => row.status === status)?.kid;
  const publishedKids = async () => ((await http(`${services.issuer}/oauth2/jwks`)).body.keys as Array<{ kid: string }>).map((key) => key.kid);

  describe('scheduled rotation', () => {
    it('makes active only a key published a whole rotation period before, and rotates once per period', async () => {
      // The cluster started 100 days ago: its first active key and its `next` were made then.
      await superuser.query(`UPDATE signing_keys SET created_at = now() - interval '100 days'`);
      const next = await kidWith('next');
      const rotated = await services.runtime.signingKeys.rotateIfOlderThan(90);
      expect(rotated).toBe(next);
      const published = await kidWith('next');
      expect(await publishedKids()).toContain(published);
      // The key that became active this instant is not 90 days into its service: it was made
      // 100 days ago as `next`, but it has signed nothing yet. Rotating it again would make
      // active the `next` key published a moment ago, before verifiers caching the JWKS know it.
      expect(await services.runtime.signingKeys.rotateIfOlderThan(90)).toBeUndefined();
      expect(await kidWith('active')).toBe(rotated);
      expect(await kidWith('next')).toBe(published);
      // 90 days of service later, it goes, and the key published 90 days before takes over.
      await superuser.query(`UPDATE signing_keys SET created_at = created_at - interval '91 days', retiring_since = retiring_since - interval '91 days'`);
      expect(await services.runtime.signingKeys.rotateIfOlderThan(90)).toBe(published);
      expect(await services.runtime.signingKeys.rotateIfOlderThan(90)).toBeUndefined();
    });
  });

  describe('reading the keys again', () => {
    it('answers a reload with a read made after it was asked for, not the read already in flight', async () => {
      const keys = services.runtime.signingKeys;
      const pool = services.runtime.pool;
      const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
      // The next read of the keys is answered by PostgreSQL at once, but reaches the store only later.
      let read!: () => void;
      const readDone = new Promise<void>((resolve) => (read = resolve));
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let held = false;
      const slow = async (text: unknown, ...rest: unknown[]): Promise<unknown> => {
        const result = await query(text, ...rest);
        if (!held && typeof text === 'string' && text.includes('FROM signing_keys')) {
          held = true;
          read();
          await released;
        }
        return result;
      };
      Object.assign(pool, { query: slow });
      try {
        const inFlight = keys.reload();
        await readDone;
        // A rotation commits (as the admin API's does, in its own transaction) after that read.
        const client = await pool.connect();
        let kid: string;
        try {
          await client.query('BEGIN');
          ({ kid } = await keys.rotateIn(client));
          await client.query('COMMIT');
        } finally {
          client.release();
        }
        const reloaded = keys.reload();
        release();
        await Promise.all([inFlight, reloaded]);
        expect(keys.activeKid()).toBe(kid);
      } finally {
        release();
        Object.assign(pool, { query });
      }
    });
  });

  describe('an instance that cannot read the keys', () => {
    it('keeps signing through a short outage of its key reads, then refuses (503) until it reads them again', async () => {
      const keys = services.runtime.signingKeys;
      const pool = services.runtime.pool;
      const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
      // Its reads of the keys fail from now on (a key sealed under a master key it lacks, say).
      const failing = (text: unknown, ...rest: unknown[]): unknown =>
        typeof text === 'string' && text.includes('FROM signing_keys')
          ? Promise.reject(new Error('the sealed value could not be opened'))
          : query(text, ...rest);
      const claims = () => ({ sub: 'writ', jti: randomUUID(), iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 60 });
      Object.assign(pool, { query: failing });
      try {
        await expect(keys.reload()).rejects.toThrow();
        await expect(keys.sign(claims(), { typ: 'at+jwt' })).resolves.toMatchObject({ kid: keys.activeKid() });
        // Two minutes on: the key it last read as active may have been rotated out (and will be
        // retired a token lifetime after that, whatever it signs now).
        // (Its last good read moved back, rather than the clock forward: the readiness answer is
        // reused for a second by the clock, and must not outlive the test.)
        (keys as unknown as { loadedAt: number }).loadedAt -= STALE_KEYS_SIGNING_LIMIT_MS + 1_000;
        await expect(keys.sign(claims(), { typ: 'at+jwt' })).rejects.toBeInstanceOf(TemporarilyUnavailableError);
        // Readiness says so, naming the check: a load balancer sends token requests elsewhere.
        const ready = await http(`${services.issuer}/health/ready`);
        expect([ready.status, ready.body.failing, ready.body.checks.signing_keys]).toEqual([
          503,
          ['signing_keys'],
          { status: 'down', reason: 'the signing keys could not be read for 2 minutes' },
        ]);
      } finally {
        Object.assign(pool, { query });
      }
      // (The refusal started a read, with the reads still failing: the next one succeeds.)
      await keys.reload().catch(() => keys.reload());
      await expect(keys.sign(claims(), { typ: 'at+jwt' })).resolves.toMatchObject({ kid: keys.activeKid() });
    });
  });

  describe('forged and reshaped tokens', () => {
    const now = () => Math.floor(Date.now() / 1000);
    const attackerSigned = (header: Record<string, unknown>, claims: Record<string, unknown>): string => {
      const input = `${b64(header)}.${b64(claims)}`;
      return `${input}.${sign('sha256', Buffer.from(input), { key: attacker.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
    };
    /** The claims of an orchestrator's Tasks API token, as Writ would sign them. */
    const tasksClaims = () => ({
      iss: services.issuer,
      sub: world.orchestrator.id,
      client_id: world.orchestrator.id,
      aud: `${services.issuer}/v1/tasks`,
      scope: 'tasks',
      iat: now(),
      exp: now() + 300,
      jti: randomUUID(),
    });
    const tasksApi = (token: string) => http(`${services.issuer}/v1/tasks/${randomUUID()}`, { headers: { authorization: `Bearer ${token}` } });

    it('answers a genuine Tasks API token (not found, rather than 401)', async () => {
      expect((await tasksApi(await tasksToken(services, world.orchestrator))).status).toBe(404);
    });

    it.each<[string, () => Promise<Record<string, unknown>>]>([
      ['jku naming the attacker’s key set', async () => ({ jku: `${attackerUrl}/jwks`, kid: 'attacker' })],
      ['x5u naming the attacker’s certificate', async () => ({ x5u: `${attackerUrl}/cert.pem`, kid: 'attacker' })],
      ['jwk embedding the attacker’s key', async () => ({ jwk: await exportJWK(attacker.publicKey) })],
      [
        'jwk embedding the attacker’s key under Writ’s active kid',
        async () => ({ jwk: await exportJWK(attacker.publicKey), kid: services.runtime.signingKeys.activeKid() }),
      ],
      [
        'x5c carrying a certificate',
        async () => ({
          x5c: ['MIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBmF0dGFjazAeFw0yNDAxMDEwMDAwMDBaFw0zNDAxMDEwMDAwMDBaMBExDzANBgNVBAMMBmF0dGFjaw=='],
        }),
      ],
      ['a kid with a path traversal', async () => ({ kid: '../../../../etc/passwd' })],
      ['a kid shaped as SQL', async () => ({ kid: "' OR status = 'retired' --" })],
      ['a huge kid', async () => ({ kid: 'k'.repeat(6000) })],
      ['an unknown kid', async () => ({ kid: randomUUID() })],
    ])('refuses a token signed by the attacker with %s, and fetches nothing', async (_name, extra) => {
      const token = attackerSigned({ alg: 'ES256', typ: 'at+jwt', kid: services.runtime.signingKeys.activeKid(), ...(await extra()) }, tasksClaims());
      const response = await tasksApi(token);
      expect(response.status).toBe(401);
      expect(fetched).toEqual([]);
    });

    it('refuses alg none, HS256 keyed with the published public key, and ES256 by a P-384 key', async () => {
      const kid = services.runtime.signingKeys.activeKid();
      const unsecured = `${b64({ alg: 'none', typ: 'at+jwt', kid })}.${b64(tasksClaims())}.`;
      const published = ((await http(`${services.issuer}/oauth2/jwks`)).body.keys as Array<{ kid: string }>).find((key) => key.kid === kid)!;
      const hsInput = `${b64({ alg: 'HS256', typ: 'at+jwt', kid })}.${b64(tasksClaims())}`;
      const pem = createPublicKey({ key: published as JsonWebKey, format: 'jwk' })
        .export({ type: 'spki', format: 'pem' })
        .toString();
      const hmacs = [JSON.stringify(published), pem].map((secret) => `${hsInput}.${createHmac('sha256', secret).update(hsInput).digest('base64url')}`);
      const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
      const esInput = `${b64({ alg: 'ES256', typ: 'at+jwt', kid })}.${b64(tasksClaims())}`;
      const es384 = `${esInput}.${sign('sha384', Buffer.from(esInput), { key: p384.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
      for (const token of [unsecured, ...hmacs, es384]) expect((await tasksApi(token)).status).toBe(401);
    });

    /** Writ's own key, made to sign what the attacker wants: what the verifier must still refuse. */
    const writSigned = (header: Record<string, unknown>, claims: Record<string, unknown>) =>
      services.runtime.signingKeys.sign(claims, { typ: 'at+jwt', ...header }).then((signed) => signed.token);

    it.each<[string, Record<string, unknown>]>([
      ['crit naming an unknown extension', { crit: ['urn:example:ext'], 'urn:example:ext': true }],
      ['an unencoded payload (b64 false, critical)', { crit: ['b64'], b64: false }],
    ])('refuses a token of its own key with %s', async (_name, header) => {
      expect((await tasksApi(await writSigned(header, tasksClaims()))).status).toBe(401);
    });

    it.each<[string, Record<string, unknown>]>([
      ['exp as a string', { exp: String(now() + 300) }],
      ['exp as a float in the past', { exp: now() - 0.5 }],
      ['iat as a string', { iat: String(now()) }],
      ['nbf as a string', { nbf: String(now()) }],
      ['nbf far in the future', { nbf: now() + 10_000_000_000 }],
      ['a negative exp', { exp: -1 }],
      ['a huge exp as a string', { exp: '9'.repeat(400) }],
    ])('refuses claims reshaped as %s, even under its own key', async (_name, change) => {
      expect((await tasksApi(await writSigned({}, { ...tasksClaims(), ...change }))).status).toBe(401);
    });

    it('writes its own iss into everything it signs: an iss with a trailing slash cannot be signed', async () => {
      const token = await writSigned({}, { ...tasksClaims(), iss: `${services.issuer}/` });
      expect(partsOf(token).claims.iss).toBe(services.issuer);
    });

    it('refuses the JWS JSON serialization, a compressed JWE and a nested JWT', async () => {
      const genuine = await tasksToken(services, world.orchestrator);
      const [protectedHeader, payload, signature] = genuine.split('.');
      const json = JSON.stringify({ protected: protectedHeader, payload, signature });
      // A compressed JWE (zip DEF) carrying the genuine token: five segments, never decrypted.
      const jwe = [b64({ alg: 'dir', enc: 'A256GCM', zip: 'DEF', cty: 'JWT' }), '', b64('iv'), b64(genuine), b64('tag')].join('.');
      // A nested JWT: a JWS (here the attacker's) whose payload is the genuine token.
      const nestedToken = attackerSigned({ alg: 'ES256', typ: 'at+jwt', cty: 'JWT', kid: services.runtime.signingKeys.activeKid() }, genuine as never);
      for (const token of [Buffer.from(json).toString('base64url'), jwe, nestedToken]) expect((await tasksApi(token)).status).toBe(401);
      const raw = await http(`${services.issuer}/v1/tasks/${randomUUID()}`, { headers: { authorization: `Bearer ${json}` } });
      expect(raw.status).toBe(401);
    });

    it('keeps each kind of token to its place: task token, Tasks API token, connector credential', async () => {
      const task = await createTask(services, world.orchestrator);
      const exchanged = await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token));
      expect(exchanged.status).toBe(200);
      const credential = exchanged.body.access_token as string;
      const tasks = await tasksToken(services, world.orchestrator);
      const kinds = { task: task.task_token, tasks, credential };
      expect(Object.fromEntries(Object.entries(kinds).map(([name, token]) => [name, partsOf(token).header.typ]))).toEqual({
        task: 'writ-task+jwt',
        tasks: 'at+jwt',
        credential: 'at+jwt',
      });
      // As a client assertion (its iss is Writ, no client's key signed it).
      for (const token of Object.values(kinds)) {
        const response = await http(`${services.issuer}/oauth2/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({
            grant_type: 'client_credentials',
            scope: 'tasks',
            client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
            client_assertion: token,
          }).toString(),
        });
        expect(response.status).toBe(401);
      }
      // A task token with the Tasks API's typ (at+jwt) but the task token's audience, and back.
      const claims = partsOf(task.task_token).claims;
      const retyped = await writSigned({ typ: 'at+jwt' }, claims);
      expect((await tasksApi(retyped)).status).toBe(401);
      expect((await tokenRequest(services.issuer, world.agent, exchangeFields(await writSigned({ typ: 'writ-task+jwt' }, tasksClaims())))).status).toBe(400);
    });
  });

  describe('the private keys', () => {
    it('never shows a private member in the JWKS, the key list, an audit event or a log line', async () => {
      expect((await sendJson('POST', `${services.adminUrl}/v1/keys/rotate`, undefined, services.adminToken)).status).toBe(201);
      const jwks = await http(`${services.issuer}/oauth2/jwks`);
      const listed = await sendJson('GET', `${services.adminUrl}/v1/keys`, undefined, services.adminToken);
      const events = await superuser.query<{ data: unknown }>(`SELECT data FROM audit_events WHERE type LIKE '%key%'`);
      for (const body of [jwks.text, listed.text, JSON.stringify(events.rows)]) expect(body).not.toMatch(/"d"\s*:|"p"\s*:|"q"\s*:|private/);
      for (const key of jwks.body.keys as Array<Record<string, unknown>>)
        expect(Object.keys(key).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
      // Every private key the store holds, opened here with the master key: none of its private
      // scalars (after every test of this suite: rotations, failed reads, refusals) in any answer or log line.
      const sealed = await superuser.query<{ kid: string; private_sealed: Buffer }>(`SELECT kid, private_sealed FROM signing_keys`);
      const scalars = sealed.rows.map(
        (row) => (JSON.parse(services.runtime.masterKey.unseal(row.private_sealed, `signing_key:${row.kid}`).toString('utf8')) as { d: string }).d,
      );
      expect(scalars.length).toBeGreaterThan(2);
      expect(logs.length).toBeGreaterThan(0);
      const everything = [jwks.text, listed.text, JSON.stringify(events.rows), ...logs].join('\n');
      for (const d of scalars) {
        expect(everything).not.toContain(d);
        expect(everything).not.toContain(Buffer.from(d, 'base64url').toString('hex'));
      }
    });
  });
});

describe('a key rotation while PostgreSQL is down', () => {
  let cluster: ScratchPostgres;
  let services: TestServices;

  beforeAll(async () => {
    cluster = await startScratchPostgres();
    services = await startTestServices({
      databaseUrl: cluster.url,
      admin: createAdminApp,
      env: { WRIT_KEY_ROTATION_DAYS: '0', WRIT_DB_CHECKOUT_TIMEOUT_MS: '1000', WRIT_DB_STATEMENT_TIMEOUT_MS: '1500' },
    });
  }, 120_000);
  afterAll(async () => {
    await services?.close();
    await cluster?.destroy();
  });

  const rotate = () =>
    fetch(`${services.adminUrl}/v1/keys/rotate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${services.adminToken}` },
      signal: AbortSignal.timeout(30_000),
    });
  const active = async () => (await services.runtime.pool.query<{ kid: string }>(`SELECT kid FROM signing_keys WHERE status = 'active'`)).rows[0].kid;

  it('answers 503 with Retry-After, rotates nothing, and rotates once PostgreSQL is back', async () => {
    const before = await active();
    await cluster.stop();
    try {
      const refused = await rotate();
      expect([refused.status, refused.headers.get('retry-after') !== null]).toEqual([503, true]);
      expect(((await refused.json()) as { error: string }).error).toBe('temporarily_unavailable');
      await expect(services.runtime.signingKeys.rotateIfOlderThan(0)).rejects.toThrow();
      // What it had read still serves: the key it signs with is the one it last read as active.
      expect(services.runtime.signingKeys.activeKid()).toBe(before);
    } finally {
      await cluster.start();
    }
    let status = 0;
    for (let attempt = 0; attempt < 40 && status !== 201; attempt += 1) {
      const response = await rotate();
      status = response.status;
      if (status !== 201) await new Promise((resolve) => setTimeout(resolve, 500));
    }
    expect(status).toBe(201);
    const after = await active();
    expect(after).not.toBe(before);
    // One rotation: the key that was active before the outage is the only one retiring.
    const { rows } = await services.runtime.pool.query<{ kid: string }>(`SELECT kid FROM signing_keys WHERE status = 'retiring'`);
    expect(rows.map((row) => row.kid)).toEqual([before]);
  }, 120_000);
});
