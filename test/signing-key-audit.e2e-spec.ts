import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import type { AuditService } from '@writ/audit';
import { clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_ALLOWED, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { eventually } from './support/eventually';
import { postForm, sendJson, tokenRequest } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

/** The key lock of `SigningKeyStore` (`KEY_LOCK`): every rotation takes it in its transaction. */
const KEY_LOCK = 7_311_043;

/** The protected header's `kid` of a compact JWS. */
const headerKid = (token: string): string => (JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString('utf8')) as { kid: string }).kid;
const claimsOf = (token: string): { jti: string } => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { jti: string };

/**
 * What the audit log says about signing keys must be what happened: the `kid` of an issued
 * token's event is the key that signed it, even when a rotation on another instance reaches
 * this one between the signature and the audit batch; each `admin.key.rotated` names the key
 * its rotation actually retired, even when two instances rotate at the same moment.
 */
describe('signing keys in the audit log', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;

  beforeAll(async () => {
    // Both ECDSA paths: the first signs on libuv's thread pool, the second on the main thread.
    first = await startTestServices({ admin: createAdminApp, env: { WRIT_ECDSA: 'thread-pool' } });
    second = await startSecondInstance(first, { admin: createAdminApp, env: { WRIT_ECDSA: 'main-thread' } });
    world = await seedWorld(first.runtime.pool);
  });
  afterAll(async () => {
    jest.restoreAllMocks();
    await second.close();
    await first.close();
  });

  const rotateThrough = async (services: TestServices): Promise<string> => {
    const rotated = await sendJson('POST', `${services.adminUrl}/v1/keys/rotate`, undefined, services.adminToken);
    expect(rotated.status).toBe(201);
    return rotated.body.kid as string;
  };

  /**
   * Rotates the key through `other`'s admin API and waits until `signer` has reloaded it (told
   * by the notification), as a rotation elsewhere lands between a signature and its audit.
   */
  const rotateBehind = async (signer: TestServices, other: TestServices): Promise<string> => {
    const kid = await rotateThrough(other);
    const seen = await eventually(
      () => signer.runtime.signingKeys.activeKid(),
      (active) => active === kid,
    );
    expect(seen).toBe(kid);
    return kid;
  };

  /**
   * The next audited issuance on `signer` (`method` of its audit service, whose work `accept`s)
   * waits, before it is queued, for a rotation through `other` to reach `signer`: the token is
   * signed, its event not built yet. Resolves with the kid that rotation made active.
   */
  const rotateBeforeNextAudit = (
    signer: TestServices,
    other: TestServices,
    method: 'recordWith' | 'recordWithBatched',
    accept: (work: unknown) => boolean = () => true,
  ): Promise<string> => {
    const audit: AuditService = signer.runtime.audit;
    const original = audit[method].bind(audit) as (work: unknown, events: unknown) => Promise<unknown>;
    return new Promise<string>((resolve, reject) => {
      let armed = true;
      const spy = jest.spyOn(audit, method).mockImplementation((async (work: unknown, events: unknown) => {
        if (armed && accept(work)) {
          armed = false;
          spy.mockRestore();
          try {
            resolve(await rotateBehind(signer, other));
          } catch (error) {
            reject(error);
          }
        }
        return original(work, events);
      }) as never);
    });
  };

  const batchedToken = (work: unknown): boolean => String((work as { kind?: string }).kind).startsWith('insert-');

  const issuedEvent = async (jti: string) => {
    const { rows } = await first.runtime.pool.query<{ data: { kid: string } }>(
      `SELECT data FROM audit_events WHERE type = 'token.issued' AND data->>'jti' = $1`,
      [jti],
    );
    expect(rows).toHaveLength(1);
    return rows[0].data;
  };

  it.each([
    ['thread pool', () => first, () => second],
    ['main thread', () => second, () => first],
  ])(
    'records in token.issued the kid that signed a Tasks API token, not the key a rotation made active before the event was built (ECDSA on the %s)',
    async (_path, signerOf, otherOf) => {
      const signer = signerOf();
      const signedWith = signer.runtime.signingKeys.activeKid();
      const rotation = rotateBeforeNextAudit(signer, otherOf(), 'recordWithBatched', batchedToken);
      // To this instance (its issuer is the first's: behind one load balancer).
      const response = await postForm(`${signer.authUrl}/oauth2/token`, {
        grant_type: 'client_credentials',
        scope: 'tasks',
        ...(await clientAuthFields(world.orchestrator.id, world.orchestrator.key, signer.issuer)),
      });
      expect(response.status).toBe(200);
      const token = response.body.access_token as string;
      const rotated = await rotation;
      expect(rotated).not.toBe(signedWith);
      expect(headerKid(token)).toBe(signedWith);
      expect((await issuedEvent(claimsOf(token).jti)).kid).toBe(headerKid(token));
      // The token still verifies: the retired key keeps verifying until the tokens it signed expire.
      // (Authenticated: not found, rather than 401.)
      expect((await sendJson('GET', `${signer.authUrl}/v1/tasks/${randomUUID()}`, undefined, token)).status).toBe(404);
    },
  );

  it('records in task.created the kid that signed the task token, across a rotation', async () => {
    const tasks = await tasksToken(first, world.orchestrator);

    const beforeTask = first.runtime.signingKeys.activeKid();
    const taskRotation = rotateBeforeNextAudit(first, second, 'recordWith');
    const declared = await sendJson(
      'POST',
      `${first.issuer}/v1/tasks`,
      { agent_id: 'agent-1', purpose: 'pay invoice INV-7 to Acme', allowed: PAYOUT_ALLOWED, ttl_seconds: 900 },
      tasks,
    );
    expect(declared.status).toBe(201);
    expect(await taskRotation).not.toBe(beforeTask);
    const taskToken = declared.body.task_token as string;
    expect(headerKid(taskToken)).toBe(beforeTask);
    const created = await first.runtime.pool.query<{ data: { kid: string } }>(`SELECT data FROM audit_events WHERE type = 'task.created' AND task_id = $1`, [
      declared.body.task_id,
    ]);
    expect(created.rows.map((row) => row.data.kid)).toEqual([headerKid(taskToken)]);
  });

  it('records in token.issued the kid that signed a connector credential, across a rotation', async () => {
    const { task_token: taskToken } = await createTask(first, world.orchestrator);
    const beforeCredential = first.runtime.signingKeys.activeKid();
    const credentialRotation = rotateBeforeNextAudit(first, second, 'recordWithBatched', batchedToken);
    const exchanged = await tokenRequest(first.issuer, world.agent, exchangeFields(taskToken, PAYOUT_REQUEST));
    expect(exchanged.status).toBe(200);
    expect(await credentialRotation).not.toBe(beforeCredential);
    const credential = exchanged.body.access_token as string;
    expect(headerKid(credential)).toBe(beforeCredential);
    expect(await issuedEvent(claimsOf(credential).jti)).toMatchObject({ kind: 'connector', kid: headerKid(credential) });
  });

  it('records, for two rotations fired at once on two instances, the key each one actually retired', async () => {
    const original = first.runtime.signingKeys.activeKid();
    expect(
      await eventually(
        () => second.runtime.signingKeys.activeKid(),
        (kid) => kid === original,
      ),
    ).toBe(original);
    const { rows: seen } = await first.runtime.pool.query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE type = 'admin.key.rotated'`);
    // Both rotations start while the key lock is held, so that both instances have read what
    // they know before either commits: they then run one after the other, in either order.
    const holder = await first.runtime.pool.connect();
    let both: string[];
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [KEY_LOCK]);
      const rotations = Promise.all([rotateThrough(first), rotateThrough(second)]);
      // A rotation commits with its event: the first to take its instance's audit batch waits for
      // the key lock, the other for the chain head that batch holds.
      const waiting = await eventually(
        async () =>
          Number(
            (
              await first.runtime.pool.query<{ n: string }>(
                `SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`,
              )
            ).rows[0].n,
          ),
        (n) => n === 2,
      );
      expect(waiting).toBe(2);
      await holder.query('SELECT pg_advisory_unlock($1)', [KEY_LOCK]);
      both = await rotations;
    } finally {
      holder.release();
    }
    const { rows } = await first.runtime.pool.query<{ data: { kid: string; previous_kid: string } }>(
      `SELECT data FROM audit_events WHERE type = 'admin.key.rotated' ORDER BY seq OFFSET $1`,
      [Number(seen[0].n)],
    );
    expect(rows.map((row) => row.data.kid).sort()).toEqual([...both].sort());
    const byPrevious = new Map(rows.map((row) => [row.data.previous_kid, row.data.kid]));
    // A chain: one retired the original key, the other the key the first made active.
    expect(byPrevious.size).toBe(2);
    const firstKid = byPrevious.get(original);
    expect(firstKid).toBeDefined();
    const secondKid = byPrevious.get(firstKid!);
    expect(secondKid).toBeDefined();
    expect(new Set([original, firstKid, secondKid]).size).toBe(3);
    // The database agrees: the last key is active, the two before it retiring.
    const keys = await first.runtime.pool.query<{ kid: string; status: string }>(`SELECT kid, status FROM signing_keys WHERE kid = ANY($1)`, [
      [original, firstKid, secondKid],
    ]);
    expect(Object.fromEntries(keys.rows.map((row) => [row.kid, row.status]))).toEqual({
      [original]: 'retiring',
      [firstKid!]: 'retiring',
      [secondKid!]: 'active',
    });
  });

  it('commits an admin rotation only with its event: no key change when the event cannot be written', async () => {
    const active = async () => (await first.runtime.pool.query<{ kid: string }>(`SELECT kid FROM signing_keys WHERE status = 'active'`)).rows[0].kid;
    const before = await active();
    const superuser = new Client({ connectionString: first.db.url });
    await superuser.connect();
    try {
      await superuser.query(`CREATE FUNCTION refuse_key_event() RETURNS trigger LANGUAGE plpgsql AS $$
                               BEGIN IF NEW.type = 'admin.key.rotated' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$`);
      await superuser.query(`CREATE TRIGGER refuse_key_event BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_key_event()`);
      const refused = await sendJson('POST', `${first.adminUrl}/v1/keys/rotate`, undefined, first.adminToken);
      expect(refused.status).not.toBe(201);
      expect(await active()).toBe(before);
    } finally {
      await superuser.query('DROP TRIGGER IF EXISTS refuse_key_event ON audit_events; DROP FUNCTION IF EXISTS refuse_key_event()');
      await superuser.end();
    }
    const kid = await rotateThrough(first);
    expect(await active()).toBe(kid);
  });

  it('records the rotations and retirements it makes on schedule, committed with them (actor system)', async () => {
    const keys = first.runtime.signingKeys;
    const before = (await first.runtime.pool.query<{ kid: string }>(`SELECT kid FROM signing_keys WHERE status = 'active'`)).rows[0].kid;
    const kid = await keys.rotateIfOlderThan(0);
    expect(kid).toBeDefined();
    const rotated = await first.runtime.pool.query<{ actor_type: string; actor_id: string; data: Record<string, unknown> }>(
      `SELECT actor_type, actor_id, data FROM audit_events WHERE type = 'key.rotated' ORDER BY seq DESC LIMIT 1`,
    );
    expect(rotated.rows).toEqual([
      {
        actor_type: 'system',
        actor_id: 'key-maintenance',
        data: expect.objectContaining({ kid, previous_kid: before, reason: 'scheduled', rotation_days: 0 }),
      },
    ]);
    // Nothing to rotate: nothing recorded.
    expect(await keys.rotateIfOlderThan(365)).toBeUndefined();
    const retiring = (await first.runtime.pool.query<{ kid: string }>(`SELECT kid FROM signing_keys WHERE status = 'retiring' ORDER BY kid`)).rows.map(
      (row) => row.kid,
    );
    expect(retiring.length).toBeGreaterThan(0);
    expect(await keys.retireOlderThan(0)).toBe(retiring.length);
    const retired = await first.runtime.pool.query<{ actor_id: string; data: { kids: string[] } }>(
      `SELECT actor_id, data FROM audit_events WHERE type = 'key.retired' ORDER BY seq DESC LIMIT 1`,
    );
    expect(retired.rows[0].actor_id).toBe('key-maintenance');
    expect([...retired.rows[0].data.kids].sort()).toEqual(retiring);
    const events = async () =>
      Number((await first.runtime.pool.query<{ n: string }>(`SELECT count(*) AS n FROM audit_events WHERE type LIKE 'key.%'`)).rows[0].n);
    const count = await events();
    expect(await keys.retireOlderThan(0)).toBe(0);
    expect(await events()).toBe(count);
  });
});
