import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool, PoolClient } from 'pg';
import { MasterKey } from '@writ/keys';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import {
  CheckpointFileError,
  checkpointDigest,
  checkpointKeyring,
  checkpointSignatureValid,
  parseCheckpointLines,
  parsePublicKeys,
  signCheckpoint,
} from './audit-checkpoint';
import { archiveAndPrune } from './audit-archive';
import { AuditCheckpointer, CHECKPOINT_COLUMNS, publicKeyFileFor } from './audit-checkpointer';
import { chainHash } from './audit-hash';
import { AuditService } from './audit.service';

const signer = new MasterKey(randomBytes(32)).checkpointSigningKey();
const keyring = checkpointKeyring([signer.publicJwk]);
/**
 * A pool whose clients stop before the next query that reads `audit_events` once {@link hold}
 * is called, until released: what another writer or a prune does meanwhile lands between the
 * checkpointer's reading of its own events and what it read before.
 */
function gatedPool(pool: Pool): { pool: Pool; hold: () => { reached: Promise<void>; release: () => void } } {
  let gate: { reach: () => void; released: Promise<void> } | undefined;
  const wrap = (client: PoolClient): PoolClient =>
    new Proxy(client, {
      get(target, property, receiver) {
        if (property !== 'query') return Reflect.get(target, property, receiver) as unknown;
        return async (...args: Parameters<PoolClient['query']>) => {
          const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string }).text;
          const held = gate;
          if (held && text?.includes('audit_events')) {
            gate = undefined;
            held.reach();
            await held.released;
          }
          return (target.query as (...all: unknown[]) => Promise<unknown>)(...args);
        };
      },
    });
  const gated = { connect: async () => wrap(await pool.connect()), query: pool.query.bind(pool) } as unknown as Pool;
  return {
    pool: gated,
    hold: () => {
      let reach!: () => void;
      let release!: () => void;
      const reached = new Promise<void>((resolve) => (reach = resolve));
      gate = { reach, released: new Promise<void>((resolve) => (release = resolve)) };
      return { reached, release };
    },
  };
}

const event = (n: number) => ({ type: 'test.event', outcome: 'info' as const, actor: { type: 'system' as const }, data: { n } });

describe('signed checkpoints', () => {
  const checkpoint = signCheckpoint({ seq: 7, hash: 'a'.repeat(64), prev: null, time: '2026-01-01T00:00:00.000Z' }, signer);

  it('verify under the signing key only, and not once any member changed', () => {
    expect(checkpoint).toMatchObject({ v: 1, seq: 7, kid: signer.kid, sig: expect.stringMatching(/^[A-Za-z0-9_-]{86}$/) });
    expect(checkpointSignatureValid(checkpoint, keyring)).toBe(true);
    for (const change of [{ seq: 8 }, { hash: 'b'.repeat(64) }, { prev: 'c'.repeat(64) }, { time: '2026-01-01T00:00:01.000Z' }]) {
      expect(checkpointSignatureValid({ ...checkpoint, ...change }, keyring)).toBe(false);
    }
    const other = new MasterKey(randomBytes(32)).checkpointSigningKey();
    expect(checkpointSignatureValid({ ...checkpoint, kid: other.kid }, checkpointKeyring([other.publicJwk]))).toBe(false);
    expect(checkpointSignatureValid(checkpoint, checkpointKeyring([]))).toBe(false);
    expect(checkpointSignatureValid({ ...checkpoint, sig: 'not base64url!' }, keyring)).toBe(false);
  });

  it('chain to the one before through a digest that covers the signature', () => {
    const next = signCheckpoint({ seq: 9, hash: 'd'.repeat(64), prev: checkpointDigest(checkpoint), time: checkpoint.time }, signer);
    expect(next.prev).toMatch(/^[0-9a-f]{64}$/);
    expect(checkpointDigest({ ...checkpoint, sig: next.sig })).not.toBe(next.prev);
  });

  it('parse from JSON lines, skipping only a last line cut short by a crash', () => {
    const line = JSON.stringify(checkpoint);
    expect(parseCheckpointLines(`${line}\n${line}\n`)).toHaveLength(2);
    expect(parseCheckpointLines(`${line}\n${line.slice(0, 20)}`)).toHaveLength(1);
    expect(() => parseCheckpointLines(`${line.slice(0, 20)}\n${line}\n`)).toThrow(new CheckpointFileError('line 1 of the checkpoint file is not JSON'));
    expect(() => parseCheckpointLines(`{"v":1,"seq":-1}\n`)).toThrow(/line 1 .* not a checkpoint/);
    expect(parsePublicKeys(JSON.stringify({ keys: [signer.publicJwk] }))).toEqual([signer.publicJwk]);
    expect(parsePublicKeys(JSON.stringify(signer.publicJwk))).toEqual([signer.publicJwk]);
    expect(() => parsePublicKeys(JSON.stringify({ keys: [{ kty: 'EC', kid: 'x' }] }))).toThrow(CheckpointFileError);
  });
});

describe('AuditCheckpointer', () => {
  let db: TestDatabase;
  let pool: Pool;
  let dir: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 10 });
    dir = await mkdtemp(join(tmpdir(), 'writ-checkpoints-'));
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('signs nothing for an empty chain, then the head once it moves, and publishes its key beside the file', async () => {
    const file = join(dir, 'first.jsonl');
    const checkpointer = new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000, file });
    await checkpointer.start();
    expect(await checkpointer.checkpoint()).toBeUndefined();
    const [record] = await new AuditService(pool).record(event(0));
    expect(await checkpointer.checkpoint()).toMatchObject({ seq: record.seq, hash: record.hash, prev: null });
    expect(await checkpointer.checkpoint()).toBeUndefined();
    expect(parsePublicKeys(await readFile(publicKeyFileFor(file), 'utf8'))).toEqual([signer.publicJwk]);
    await checkpointer.stop();
  });

  it('never appends through a symbolic link planted at the checkpoint path, nor to a file others may rewrite', async () => {
    // Another local user who can create names in the folder (a shared volume, /tmp) links the
    // checkpoint path to a file of this user's: the lines must not land in it.
    const victim = join(dir, 'victim.txt');
    await writeFile(victim, 'untouched\n', { mode: 0o600 });
    const linked = join(dir, 'linked.jsonl');
    await symlink(victim, linked);
    await expect(new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000, file: linked }).start()).rejects.toThrow(
      `the checkpoint file ${linked} is a symbolic link: give WRIT_AUDIT_CHECKPOINT_FILE the real path`,
    );
    // Planted after the start: the append refuses it too (on a database of its own: the
    // checkpoint row commits before the append, and the other tests count rows).
    const own = await createTestDatabase();
    const ownPool = new Pool({ connectionString: own.url, max: 2 });
    try {
      const late = join(dir, 'late.jsonl');
      const checkpointer = new AuditCheckpointer(ownPool, signer, { every: 1000, intervalMs: 3_600_000, file: late });
      await checkpointer.start();
      await symlink(victim, late);
      await new AuditService(ownPool).record(event(0));
      await expect(checkpointer.checkpoint()).rejects.toThrow(/is a symbolic link/);
      expect(await readFile(victim, 'utf8')).toBe('untouched\n');
      await checkpointer.stop();
      // audit:archive appends its prune marker to the same file: refused before it prunes anything.
      await new AuditService(ownPool).record(event(1));
      const head = await new AuditCheckpointer(ownPool, signer, { every: 1000, intervalMs: 3_600_000 }).checkpoint();
      await expect(
        archiveAndPrune({ pool: ownPool, signer, cut: { seq: head!.seq + 1 }, outDir: join(dir, 'archives'), actor: 'test', checkpointFile: late }),
      ).rejects.toThrow(/is a symbolic link/);
      expect(await readFile(victim, 'utf8')).toBe('untouched\n');
      expect((await ownPool.query('SELECT count(*)::int AS n FROM audit_prunes')).rows[0]).toEqual({ n: 0 });
    } finally {
      await ownPool.end();
      await own.drop();
    }

    // A file or folder any user may write: its lines (the evidence) could be truncated away.
    const open = join(dir, 'open.jsonl');
    await writeFile(open, '', { mode: 0o600 });
    await chmod(open, 0o666);
    await expect(new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000, file: open }).start()).rejects.toThrow(
      `the checkpoint file ${open} is writable by other users (mode 666): chmod go-w ${open}`,
    );
    const shared = join(dir, 'shared');
    await mkdir(shared, { mode: 0o700 });
    await chmod(shared, 0o777);
    await expect(new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000, file: join(shared, 'checkpoints.jsonl') }).start()).rejects.toThrow(
      `the checkpoint file's folder ${shared} is writable by other users (mode 777): chmod go-w ${shared}`,
    );
  });

  it('publishes its key beside the file when instances of one process start at once', async () => {
    // Several runtimes in one process (the test suites, or services sharing a process) write the
    // same key file at the same moment.
    const file = join(dir, 'together.jsonl');
    const instances = [1, 2, 3, 4].map(() => new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000, file }));
    await Promise.all(instances.map((instance) => instance.start()));
    expect(parsePublicKeys(await readFile(publicKeyFileFor(file), 'utf8'))).toEqual([signer.publicJwk]);
    await Promise.all(instances.map((instance) => instance.stop()));
  });

  it('across two instances racing over one database: one row per seq, each linked to the one before, each in one file', async () => {
    const files = [join(dir, 'a.jsonl'), join(dir, 'b.jsonl')];
    const instances = files.map((file) => new AuditCheckpointer(pool, signer, { every: 5, intervalMs: 3_600_000, file }));
    for (const instance of instances) await instance.start();
    const writers = instances.map((instance) => new AuditService(pool, { onAppended: (events) => instance.noteAppended(events) }));
    const before = Number((await pool.query<{ seq: string }>('SELECT max(seq) AS seq FROM audit_checkpoints')).rows[0].seq);
    for (let round = 0; round < 20; round += 1) {
      await Promise.all(writers.map((writer, n) => writer.record([event(round), event(n)])));
      await Promise.all(instances.map((instance) => instance.trigger()));
    }
    await Promise.all(instances.map((instance) => instance.stop()));
    const { rows } = await pool.query<{ seq: string }>('SELECT seq FROM audit_checkpoints WHERE seq > $1 ORDER BY seq', [before]);
    expect(rows.length).toBeGreaterThan(5);
    const stored = rows.map((row) => Number(row.seq));
    const inFiles = (await Promise.all(files.map(async (file) => parseCheckpointLines(await readFile(file, 'utf8').catch(() => ''))))).flat();
    expect(inFiles.map((checkpoint) => checkpoint.seq).sort((a, b) => a - b)).toEqual(stored);
    const head = Number((await pool.query<{ seq: string }>('SELECT seq FROM audit_chain_head')).rows[0].seq);
    expect(stored[stored.length - 1]).toBe(head);
    const verification = await new AuditService(pool, { checkpointKeys: [signer.publicJwk] }).verify();
    expect(verification).toMatchObject({ valid: true, events: head, checkpoints_verified: stored.length + 1, last_checkpoint_seq: head }); // + the first test's
    for (const file of files) {
      const external = parseCheckpointLines(await readFile(file, 'utf8').catch(() => ''));
      expect(await new AuditService(pool, { checkpointKeys: [signer.publicJwk] }).verify({ external })).toMatchObject({ valid: true });
    }
  });

  it('verifies as valid while events and checkpoints are being written (one snapshot, the file read first)', async () => {
    const file = join(dir, 'busy.jsonl');
    const checkpointer = new AuditCheckpointer(pool, signer, { every: 3, intervalMs: 3_600_000, file });
    await checkpointer.start();
    const writer = new AuditService(pool, { onAppended: (events) => checkpointer.noteAppended(events) });
    const verifier = new AuditService(pool, { checkpointKeys: [signer.publicJwk], checkpointFile: file });
    let writing = true;
    const writes = (async () => {
      for (let n = 0; n < 60; n += 1) await writer.record([event(n), event(n + 1)]);
      writing = false;
    })();
    const results = [];
    while (writing) results.push(await verifier.verify(7));
    await writes;
    await checkpointer.stop();
    results.push(await verifier.verify());
    expect(results.filter((result) => !result.valid)).toEqual([]);
    expect(results.length).toBeGreaterThan(1);
  });

  it('signs by time while events keep coming, without a count trigger', async () => {
    const checkpointer = new AuditCheckpointer(pool, signer, { every: 1_000_000, intervalMs: 50 });
    await checkpointer.start();
    const [record] = await new AuditService(pool).record(event(1));
    const signed = async () => Number((await pool.query<{ seq: string }>('SELECT max(seq) AS seq FROM audit_checkpoints')).rows[0].seq);
    for (let tries = 0; (await signed()) < record.seq && tries < 200; tries += 1) await new Promise((resolve) => setTimeout(resolve, 25));
    expect(await signed()).toBe(record.seq);
    await checkpointer.stop();
  });

  it('notices that an event it wrote after the last checkpoint was rewritten, and leaves a signed record of it in the file', async () => {
    const file = join(dir, 'altered.jsonl');
    const altered: number[] = [];
    const checkpointer = new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000, file, onAltered: ({ seq }) => altered.push(seq) });
    await checkpointer.start();
    const writer = new AuditService(pool, { onAppended: (events) => checkpointer.noteAppended(events) });
    await writer.record(event(1));
    const signed = await checkpointer.checkpoint();
    const [target] = await writer.record([event(2), event(3)]);
    const client = await pool.connect();
    try {
      // Consistent for the chain alone: the event and the head rewritten with recomputed hashes.
      await client.query('BEGIN; SET LOCAL session_replication_role = replica');
      const { rows } = await client.query('SELECT * FROM audit_events WHERE seq >= $1 ORDER BY seq', [target.seq]);
      let prev = target.prev_hash;
      for (const row of rows) {
        const body = {
          seq: Number(row.seq),
          id: row.id,
          occurred_at: row.occurred_at.toISOString(),
          type: row.type,
          outcome: row.outcome,
          actor_type: row.actor_type,
          actor_id: row.actor_id,
          agent_id: row.agent_id,
          task_id: row.task_id,
          connector_id: row.connector_id,
          data: Number(row.seq) === target.seq ? { n: 666 } : row.data,
        };
        const hash = chainHash(prev, body);
        await client.query('UPDATE audit_events SET data = $2, prev_hash = $3, hash = $4 WHERE seq = $1', [body.seq, body.data, prev, hash]);
        prev = hash;
      }
      await client.query('UPDATE audit_chain_head SET hash = $1', [prev]);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const service = new AuditService(pool, { checkpointKeys: [signer.publicJwk], checkpointFile: file });
    expect(await service.verify()).toMatchObject({ valid: true, last_checkpoint_seq: signed!.seq });
    expect(await checkpointer.checkpoint()).toBeUndefined();
    expect(altered).toEqual([target.seq]);
    expect(await service.verify()).toMatchObject({ valid: false, first_invalid_seq: signed!.seq + 1, invalid_checkpoint_seq: target.seq });
    await checkpointer.stop();
  });

  /** A database of its own (a prune removes every earlier test's events; one rewrote an event). */
  const withDatabase = async (test: (pool: Pool) => Promise<void>) => {
    const own = await createTestDatabase();
    const ownPool = new Pool({ connectionString: own.url, max: 10 });
    try {
      await test(ownPool);
    } finally {
      await ownPool.end();
      await own.drop();
    }
  };

  it('does not take its own events dropped from memory while it checks them for events removed from the database', () =>
    withDatabase(async (pool) => {
      const file = join(dir, 'bounded.jsonl');
      const altered: number[] = [];
      const gated = gatedPool(pool);
      // every 1: this instance remembers at most 1002 of its events (every * 2 + 1000).
      const checkpointer = new AuditCheckpointer(gated.pool, signer, { every: 1, intervalMs: 3_600_000, file, onAltered: ({ seq }) => altered.push(seq) });
      await checkpointer.start();
      const writer = new AuditService(pool, { onAppended: (events) => checkpointer.noteAppended(events) });
      const { reached, release } = gated.hold();
      await writer.record([event(1), event(2)]);
      await reached;
      // The checkpoint these two events started is reading them back; 1 100 more are written and
      // noted meanwhile, which drops the first two from what this instance remembers.
      const running = checkpointer.trigger();
      for (let n = 0; n < 2; n += 1) await writer.record(Array.from({ length: 550 }, (_, i) => event(i)));
      release();
      await running;
      await checkpointer.stop();
      expect(altered).toEqual([]);
      // Every line a checkpoint (a record of an alteration without its hash made the file unreadable).
      expect(parseCheckpointLines(await readFile(file, 'utf8')).length).toBeGreaterThan(0);
      const verification = await new AuditService(pool, { checkpointKeys: [signer.publicJwk], checkpointFile: file }).verify();
      expect(verification).toMatchObject({ valid: true, events: 1102 });
    }));

  it('does not take its own events pruned under a signed marker while it checks them for events removed', () =>
    withDatabase(async (pool) => {
      const altered: number[] = [];
      const gated = gatedPool(pool);
      const checkpointer = new AuditCheckpointer(gated.pool, signer, { every: 1000, intervalMs: 3_600_000, onAltered: ({ seq }) => altered.push(seq) });
      await checkpointer.start();
      const writer = new AuditService(pool, { onAppended: (events) => checkpointer.noteAppended(events) });
      const [, last] = await writer.record([event(1), event(2)]);
      const { reached, release } = gated.hold();
      const running = checkpointer.trigger();
      await reached;
      // Meanwhile another instance signs the head and the owner prunes up to it.
      const other = new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000 });
      expect(await other.checkpoint()).toMatchObject({ seq: expect.any(Number) });
      const pruned = await archiveAndPrune({ pool, signer, cut: { seq: last.seq + 1 }, outDir: dir, actor: 'test' });
      expect(pruned).toMatchObject({ pruned: true });
      release();
      await running;
      expect(altered).toEqual([]);
      await checkpointer.stop();
      expect(altered).toEqual([]);
    }));

  it('refuses a checkpoint file it cannot read, naming the line', async () => {
    const file = join(dir, 'broken.jsonl');
    await writeFile(file, 'garbage\n{}\n');
    const verification = await new AuditService(pool, { checkpointKeys: [signer.publicJwk], checkpointFile: file }).verify();
    expect(verification).toMatchObject({ valid: false, reason: 'line 1 of the checkpoint file is not JSON' });
  });

  it('reports its unsigned events, failed attempts and last success, also where another instance signs', async () => {
    const signing = new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000 });
    const other = new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000 });
    await Promise.all([signing.start(), other.start()]);
    const audit = new AuditService(pool, { onAppended: (events) => other.noteAppended(events) });
    await Promise.all([audit.record(event(1)), audit.record(event(2)), audit.record(event(3))]);
    expect(other.status()).toEqual({ unsignedEvents: 3, failures: 0, lastSuccessMs: undefined });
    expect(await signing.checkpoint()).toBeDefined();
    // `other` did not sign; its next attempt learns how far the signed checkpoints reach.
    await other.trigger();
    expect(other.status()).toEqual({ unsignedEvents: 0, failures: 0, lastSuccessMs: expect.any(Number) });
    const broken = new Pool({ connectionString: db.url.replace(/\/[^/]*$/, '/no_such_database'), max: 1 });
    const failing = new AuditCheckpointer(broken, signer, { every: 1000, intervalMs: 3_600_000 });
    await failing.trigger();
    expect(failing.status()).toMatchObject({ failures: 1, lastSuccessMs: undefined });
    await broken.end();
    await Promise.all([signing.stop(), other.stop()]);
  });
});

describe('AuditService.verify over many checkpoints', () => {
  let db: TestDatabase;
  let pool: Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 4 });
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  it('checks again only the signatures of checkpoints it has not verified, and still notices an old one altered', async () => {
    // A year of checkpoints is hundreds of thousands (one a minute at least): an Ed25519
    // verification each, twice with the file, held the event loop for seconds on every
    // GET /v1/audit/verify a viewer sent, "incremental" or not.
    const count = 3000;
    const records = await new AuditService(pool).record(Array.from({ length: count }, (_, n) => event(n)));
    const checkpoints: ReturnType<typeof signCheckpoint>[] = [];
    for (const record of records) {
      const prev = checkpoints.length > 0 ? checkpointDigest(checkpoints[checkpoints.length - 1]) : null;
      checkpoints.push(signCheckpoint({ seq: record.seq, hash: record.hash, prev, time: new Date().toISOString() }, signer));
    }
    await pool.query(
      `INSERT INTO audit_checkpoints (${CHECKPOINT_COLUMNS})
       SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])`,
      (['seq', 'hash', 'prev', 'time', 'kid', 'sig'] as const).map((member) => checkpoints.map((checkpoint) => checkpoint[member])),
    );
    const verifier = new AuditService(pool, { checkpointKeys: [signer.publicJwk] });
    const external = checkpoints.slice(-count / 2);
    expect(await verifier.verify({ incremental: true, external })).toMatchObject({ valid: true, checkpoints_verified: count });

    const crypto = jest.requireActual<typeof import('node:crypto')>('node:crypto');
    const verifications = jest.spyOn(crypto, 'verify');
    try {
      await new AuditService(pool).record(event(count));
      expect(await verifier.verify({ incremental: true, external })).toMatchObject({ valid: true, checkpoints_verified: count });
      expect(verifications.mock.calls.length).toBeLessThan(10);
    } finally {
      verifications.mockRestore();
    }

    // A service that has verified none (just started) checks them all, letting requests run meanwhile.
    let gap = 0;
    let last = Date.now();
    const ticking = setInterval(() => {
      gap = Math.max(gap, Date.now() - last);
      last = Date.now();
    }, 5);
    try {
      expect(await new AuditService(pool, { checkpointKeys: [signer.publicJwk] }).verify({ external })).toMatchObject({ valid: true });
    } finally {
      clearInterval(ticking);
    }
    expect(gap).toBeLessThan(150);

    // A superuser moves an old checkpoint's time: noticed, though its signature is not checked again.
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SET LOCAL session_replication_role = replica');
      await client.query(`UPDATE audit_checkpoints SET signed_at = signed_at + interval '1 second' WHERE seq = $1`, [checkpoints[10].seq]);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    expect(await verifier.verify({ incremental: true })).toMatchObject({ valid: false, invalid_checkpoint_seq: checkpoints[11].seq });
    expect(await new AuditService(pool, { checkpointKeys: [signer.publicJwk] }).verify()).toMatchObject({
      valid: false,
      invalid_checkpoint_seq: checkpoints[10].seq,
      reason: expect.stringMatching(/not signed by a Writ checkpoint key/),
    });
  }, 60_000);
});
