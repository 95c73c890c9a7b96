import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { ARCHIVE_FILES, chainHash, parseCheckpointLines, PruneMarkerBody, pruneMarkerSigningInput, publicKeyFileFor, SignedPruneMarker } from '@writ/audit';
import { loadConfig } from '@writ/config';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { auditArchive } from '../scripts/audit-archive-command';
import { auditVerify } from '../scripts/audit-verify-command';
import { sendJson } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

jest.setTimeout(120_000);

/**
 * Audit retention: the owner archives and prunes whole checkpointed segments under a marker
 * signed with the checkpoint key; verification accepts the chain that starts after it, and
 * still reports a prefix deleted any other way, a forged marker, or a prune by the services.
 */
describe('audit retention: archive and prune under a signed marker', () => {
  let services: TestServices;
  let superuser: Client;
  let out: string;

  const env = () => ({
    WRIT_DATABASE_URL: services.config.databaseUrl!,
    WRIT_MIGRATION_DATABASE_URL: services.db.url,
    WRIT_DATA_DIR: services.config.dataDir,
    WRIT_MASTER_KEY: services.config.masterKey!.toString('base64'),
    WRIT_AUDIT_CHECKPOINT_FILE: services.config.auditCheckpointFile!,
  });
  const archive = (args: string[]) => auditArchive(args, loadConfig(env(), process.cwd()));
  const verifyCli = (args: string[] = [], withMasterKey = true) => {
    const { WRIT_MASTER_KEY, ...rest } = env();
    return auditVerify(args, loadConfig(withMasterKey ? { ...rest, WRIT_MASTER_KEY } : rest, process.cwd(), { masterKeyOptional: true }));
  };
  /** A full walk (at most once a minute per instance), or the incremental one. */
  const verifyApi = async (full = true) =>
    (await sendJson('GET', `${services.adminUrl}/v1/audit/verify${full ? '?full=true' : ''}`, undefined, services.adminToken)).body as Record<string, unknown>;
  const append = (n: number) =>
    services.runtime.audit.record(
      Array.from({ length: n }, (_, i) => ({ type: 'test.event', outcome: 'info' as const, actor: { type: 'system' as const }, data: { i } })),
    );
  /** Appends `n` events and signs a checkpoint at the head; returns its seq. */
  const checkpointAfter = async (n: number) => {
    await append(n);
    await services.runtime.checkpointer!.trigger();
    await services.runtime.checkpointer!.trigger();
    return Number((await superuser.query('SELECT max(seq) AS seq FROM audit_checkpoints')).rows[0].seq);
  };
  const minSeq = async () => Number((await superuser.query('SELECT min(seq) AS seq FROM audit_events')).rows[0].seq);

  beforeEach(async () => {
    services = await startTestServices({ admin: createAdminApp, env: { WRIT_AUDIT_CHECKPOINT_EVERY: '100000', WRIT_AUDIT_CHECKPOINT_SECONDS: '3600' } });
    superuser = new Client({ connectionString: services.db.url });
    await superuser.connect();
    out = await mkdtemp(join(tmpdir(), 'writ-archive-'));
  });
  afterEach(async () => {
    await superuser?.end();
    await services?.close();
    await rm(out, { recursive: true, force: true });
  });

  it('prunes only up to the last checkpoint before the cut, records it, and the rest still verifies (API, CLI, offline)', async () => {
    const first = await checkpointAfter(20);
    const second = await checkpointAfter(15);
    await append(5); // unsigned tail
    // Cut between the two checkpoints: only the first segment goes.
    const done = await archive(['--before', String(second), '--out', out, '--actor', 'ops-alice']);
    expect(done).toMatchObject({ code: 0, result: { pruned: true, from_seq: 1, up_to_seq: first, events: first } });
    expect(await minSeq()).toBe(first + 1);
    const pruned = await superuser.query<{ actor_id: string; data: Record<string, unknown> }>(
      `SELECT actor_id, data FROM audit_events WHERE type = 'audit.pruned'`,
    );
    expect(pruned.rows).toEqual([{ actor_id: 'ops-alice', data: expect.objectContaining({ from_seq: 1, up_to_seq: first, events: first }) }]);

    expect(await verifyApi()).toMatchObject({ valid: true, pruned_up_to_seq: first });
    expect(await verifyCli()).toMatchObject({ code: 0, result: { valid: true, pruned_up_to_seq: first } });
    // Offline, with the checkpoint file (which now also holds the marker) and the public key.
    const file = services.config.auditCheckpointFile!;
    expect((await readFile(file, 'utf8')).split('\n').some((line) => line.includes('"kind":"prune"'))).toBe(true);
    expect(parseCheckpointLines(await readFile(file, 'utf8')).length).toBeGreaterThanOrEqual(2);
    expect(await verifyCli(['--checkpoints', file, '--public-key', publicKeyFileFor(file)], false)).toMatchObject({ code: 0, result: { valid: true } });

    // The archive verifies offline, with the published key alone.
    const dir = done.result!.archive!;
    const offline = await verifyCli(['--archive', dir, '--public-key', publicKeyFileFor(file)], false);
    expect(offline).toMatchObject({ code: 0, result: { valid: true, events: first, up_to_seq: first, marker_verified: true, key_source: 'public-key' } });
    // An archived event altered: the archive no longer verifies.
    const events = join(dir, ARCHIVE_FILES.events);
    const original = await readFile(events, 'utf8');
    await writeFile(events, original.replace('"i":3', '"i":4'));
    expect(await verifyCli(['--archive', dir, '--public-key', publicKeyFileFor(file)], false)).toMatchObject({ code: 1, result: { valid: false } });
    await writeFile(events, original);

    // A second prune continues from the marker; a cut before any new checkpoint prunes nothing.
    expect(await archive(['--before', String(second), '--out', out])).toMatchObject({ code: 0, result: { pruned: false } });
    const head = Number((await superuser.query('SELECT seq FROM audit_chain_head')).rows[0].seq);
    const again = await archive(['--before', new Date(Date.now() + 60_000).toISOString(), '--out', out]);
    expect(again).toMatchObject({ code: 0, result: { pruned: true, from_seq: first + 1, up_to_seq: second } });
    // Never past the last checkpoint at or before the cut: the unsigned tail and the first audit.pruned stay.
    expect(await minSeq()).toBe(second + 1);
    expect(Number((await superuser.query('SELECT count(*) AS n FROM audit_events')).rows[0].n)).toBe(head - second + 1);
    // The incremental walk, whose last verified checkpoint was pruned meanwhile, starts at the marker.
    expect(await verifyApi(false)).toMatchObject({ valid: true, pruned_up_to_seq: second });
    expect(await verifyCli()).toMatchObject({ code: 0, result: { valid: true, pruned_up_to_seq: second } });
    expect(await verifyCli(['--archive', again.result!.archive!, '--public-key', publicKeyFileFor(file)], false)).toMatchObject({
      code: 0,
      result: { valid: true, marker_verified: true },
    });
  });

  it('refuses an archive whose lines were rewritten in ways the hash does not see, even without its prune marker', async () => {
    const first = await checkpointAfter(12);
    await append(2);
    const done = await archive(['--before', String(first + 1), '--out', out]);
    expect(done).toMatchObject({ code: 0, result: { pruned: true, up_to_seq: first } });
    const dir = done.result!.archive!;
    const keyFile = publicKeyFileFor(services.config.auditCheckpointFile!);
    // Whoever holds the archive drops the marker, then edits lines and fixes the manifest's digest.
    await rm(join(dir, ARCHIVE_FILES.marker));
    expect(await verifyCli(['--archive', dir, '--public-key', keyFile], false)).toMatchObject({ code: 0, result: { valid: true, marker_verified: false } });
    const eventsFile = join(dir, ARCHIVE_FILES.events);
    const original = (await readFile(eventsFile, 'utf8')).split('\n');
    const rewrite = async (line: string) => {
      const text = [...original.slice(0, 2), line, ...original.slice(3)].join('\n');
      await writeFile(eventsFile, text);
      const manifestFile = join(dir, ARCHIVE_FILES.manifest);
      const manifest = JSON.parse(await readFile(manifestFile, 'utf8'));
      await writeFile(manifestFile, JSON.stringify({ ...manifest, events_sha256: createHash('sha256').update(text, 'utf8').digest('hex') }));
      return verifyCli(['--archive', dir, '--public-key', keyFile], false);
    };
    // A member given twice: JSON.parse keeps the last (what was hashed), other readers the first.
    const twice = original[2].replace('"outcome":"info"', '"outcome":"success","outcome":"info"');
    expect(twice).not.toBe(original[2]);
    expect(await rewrite(twice)).toMatchObject({ code: 1, result: { valid: false, first_invalid_seq: 3 } });
    // A member the hash does not cover.
    expect(await rewrite(original[2].replace(/}$/, ',"approved_by":"cfo"}'))).toMatchObject({ code: 1, result: { valid: false, first_invalid_seq: 3 } });
  });

  it('an instance that wrote the pruned events does not take the prune for tampering', async () => {
    await append(20);
    // One checkpoint of the head: this instance still remembers the hashes of the events it covers.
    await services.runtime.checkpointer!.trigger();
    const head = Number((await superuser.query('SELECT seq FROM audit_chain_head')).rows[0].seq);
    expect(await archive(['--before', String(head + 1), '--out', out])).toMatchObject({ code: 0, result: { pruned: true, up_to_seq: head } });
    await append(2);
    await services.runtime.checkpointer!.trigger();
    await services.runtime.checkpointer!.trigger();
    const file = services.config.auditCheckpointFile!;
    expect(await verifyCli(['--checkpoints', file, '--public-key', publicKeyFileFor(file)], false)).toMatchObject({ code: 0, result: { valid: true } });
  });

  it('reports a prefix deleted without a marker, by a superuser with the triggers off', async () => {
    const checkpoint = await checkpointAfter(20);
    await append(3);
    await superuser.query('BEGIN');
    await superuser.query('SET LOCAL session_replication_role = replica');
    await superuser.query('DELETE FROM audit_events WHERE seq <= $1', [checkpoint]);
    await superuser.query('COMMIT');
    expect(await verifyApi()).toMatchObject({ valid: false, first_invalid_seq: 1, reason: 'event 1 is missing' });
    expect(await verifyCli()).toMatchObject({ code: 1 });
  });

  it('after a legitimate prune, still reports more events deleted, or the marker deleted, by a superuser', async () => {
    const first = await checkpointAfter(10);
    const second = await checkpointAfter(10);
    await append(3);
    expect(await archive(['--before', String(first + 1), '--out', out])).toMatchObject({ code: 0, result: { pruned: true, up_to_seq: first } });
    const asSuperuser = async (sql: string, values: unknown[]) => {
      await superuser.query('BEGIN');
      await superuser.query('SET LOCAL session_replication_role = replica');
      await superuser.query(sql, values);
      await superuser.query('COMMIT');
    };
    // The next segment deleted without a marker of its own.
    await asSuperuser('DELETE FROM audit_events WHERE seq > $1 AND seq <= $2', [first, second]);
    expect(await verifyApi()).toMatchObject({ valid: false, first_invalid_seq: first + 1, reason: `event ${first + 1} is missing` });
    // The marker itself deleted: the chain would have to start at seq 1 again.
    await asSuperuser('DELETE FROM audit_prunes', []);
    expect(await verifyCli()).toMatchObject({ code: 1, result: { valid: false, first_invalid_seq: 1 } });
  });

  it('after a legitimate prune, reports an event inserted below the marker, even by the services’ login with a hash that recomputes', async () => {
    const first = await checkpointAfter(10);
    await append(3);
    expect(await archive(['--before', String(first + 1), '--out', out])).toMatchObject({ code: 0, result: { pruned: true, up_to_seq: first } });
    expect(await verifyApi()).toMatchObject({ valid: true, pruned_up_to_seq: first });
    // A pruned event put back (or one made up) where only the archive may hold events: lists and
    // exports would show it, and a walk that starts after the marker would never read it.
    const body = {
      seq: first - 1,
      id: '01890000-0000-7000-8000-000000000001',
      occurred_at: '2026-01-01T00:00:00.000Z',
      type: 'admin.agent.created',
      outcome: 'success' as const,
      actor_type: 'admin' as const,
      actor_id: 'someone-else',
      agent_id: 'agent-x',
      task_id: null,
      connector_id: null,
      data: { name: 'planted' },
    };
    const prevHash = '0'.repeat(64);
    await services.runtime.pool.query(
      `INSERT INTO audit_events (seq, id, occurred_at, type, outcome, actor_type, actor_id, agent_id, task_id, connector_id, data, prev_hash, hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [...Object.values(body), prevHash, chainHash(prevHash, body)],
    );
    const reason = `event ${first - 1} lies before the start of the chain (after the signed prune marker at seq ${first}): not written by Writ`;
    expect(await verifyCli()).toMatchObject({ code: 1, result: { valid: false, first_invalid_seq: first - 1, reason } });
    expect(await verifyApi(false)).toMatchObject({ valid: false, first_invalid_seq: first - 1, reason });
  });

  it('refuses a plain DELETE by the owner without a marker, and a marker of another transaction', async () => {
    const checkpoint = await checkpointAfter(10);
    await expect(superuser.query('DELETE FROM audit_events WHERE seq = 1')).rejects.toThrow(/append-only/);
    await expect(superuser.query('TRUNCATE audit_events')).rejects.toThrow(/append-only/);
    // A real prune commits a marker; a later transaction cannot reuse it to delete more.
    await append(5);
    await checkpointAfter(1);
    expect(await archive(['--before', String(checkpoint + 1), '--out', out])).toMatchObject({ code: 0, result: { pruned: true } });
    await expect(superuser.query('DELETE FROM audit_events WHERE seq <= $1', [checkpoint + 3])).rejects.toThrow(/append-only/);
    await expect(superuser.query('UPDATE audit_events SET data = $1 WHERE seq = $2', ['{}', checkpoint + 1])).rejects.toThrow(/append-only/);
  });

  it('the services’ login cannot prune: no DELETE, no marker', async () => {
    await checkpointAfter(10);
    const pool = services.runtime.pool;
    expect((await pool.query<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_roles WHERE rolname = current_user')).rows[0].rolsuper).toBe(false);
    await expect(pool.query(`INSERT INTO audit_prunes SELECT 1, 'h', 'c', 's', 1, NULL, now(), 'x', 'k', 'sig'`)).rejects.toThrow(/permission denied/);
    await expect(pool.query('DELETE FROM audit_events WHERE seq = 1')).rejects.toThrow(/permission denied/);
    // Nor through the CLI with the services' URL as the owner.
    const asService = await auditArchive(
      ['--before', '1000', '--out', out],
      loadConfig({ ...env(), WRIT_MIGRATION_DATABASE_URL: services.config.databaseUrl! }, process.cwd()),
    );
    expect(asService).toMatchObject({ code: 2, error: expect.stringMatching(/permission denied/) });
    expect(await minSeq()).toBe(1);
    expect(await verifyApi()).toMatchObject({ valid: true });
  });

  it('reports a forged marker: a DBA who signs their own marker and deletes under it', async () => {
    const checkpoint = await checkpointAfter(20);
    await append(3);
    const cp = (await superuser.query<{ hash: string }>('SELECT hash FROM audit_checkpoints WHERE seq = $1', [checkpoint])).rows[0];
    // A well-formed marker under Writ's kid, signed with another key.
    const { privateKey } = generateKeyPairSync('ed25519');
    const kid = JSON.parse(await readFile(publicKeyFileFor(services.config.auditCheckpointFile!), 'utf8')).keys[0].kid as string;
    const body: PruneMarkerBody = {
      v: 1,
      kind: 'prune',
      up_to_seq: checkpoint,
      up_to_hash: cp.hash,
      checkpoint: 'f'.repeat(64),
      exported_sha256: '0'.repeat(64),
      events: checkpoint,
      prev: null,
      time: new Date().toISOString(),
      actor: 'dba',
      kid,
    };
    const forged: SignedPruneMarker = { ...body, sig: sign(null, pruneMarkerSigningInput(body), privateKey).toString('base64url') };
    // The trigger lets the owner delete under a marker of the same transaction: the signature is the proof.
    await superuser.query('BEGIN');
    await superuser.query(`INSERT INTO audit_prunes VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9)`, [
      forged.up_to_seq,
      forged.up_to_hash,
      forged.checkpoint,
      forged.exported_sha256,
      forged.events,
      forged.time,
      forged.actor,
      forged.kid,
      forged.sig,
    ]);
    await superuser.query('DELETE FROM audit_events WHERE seq <= $1', [checkpoint]);
    await superuser.query('COMMIT');
    expect(await verifyApi()).toMatchObject({ valid: false, invalid_checkpoint_seq: checkpoint, reason: expect.stringMatching(/prune marker .* not signed/) });
    expect(await verifyCli()).toMatchObject({ code: 1 });
  });
});
