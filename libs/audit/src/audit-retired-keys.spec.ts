import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'pg';
import { MasterKey } from '@writ/keys';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { archiveAndPrune } from './audit-archive';
import { checkpointDigest, CheckpointSigner, SignedCheckpoint } from './audit-checkpoint';
import { AuditCheckpointer, CHECKPOINT_COLUMNS, checkpointFromRow, CheckpointRow } from './audit-checkpointer';
import { PRUNE_COLUMNS, pruneMarkerDigest, pruneMarkerFromRow, PruneRow, signPruneMarker } from './audit-prune';
import { AuditService } from './audit.service';

const event = (n: number) => ({ type: 'test.event', outcome: 'info' as const, actor: { type: 'system' as const }, data: { n } });

/**
 * `WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS` lists the public keys of master keys dropped after a
 * rotation (A here; B is the current one). A dropped key may have leaked, and its private key
 * still signs: it is trusted only for what it signed before B's checkpoints took over.
 */
describe('audit verification with retired checkpoint keys', () => {
  const a = new MasterKey(randomBytes(32)).checkpointSigningKey();
  const b = new MasterKey(randomBytes(32)).checkpointSigningKey();
  let db: TestDatabase;
  let pool: Pool;
  let dir: string;

  const record = async (count: number) => {
    await new AuditService(pool).record(Array.from({ length: count }, (_, n) => event(n)));
  };
  const sign = async (signer: CheckpointSigner) =>
    (await new AuditCheckpointer(pool, signer, { every: 1000, intervalMs: 3_600_000 }).checkpoint()) as SignedCheckpoint;
  const verify = () => new AuditService(pool, { checkpointKeys: [b.publicJwk], retiredCheckpointKeys: [a.publicJwk] }).verify();
  const checkpoints = async () =>
    (await pool.query<CheckpointRow>(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq`)).rows.map(checkpointFromRow);

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 4 });
    dir = await mkdtemp(join(tmpdir(), 'writ-retired-'));
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  it('trusts the retired key before the current key took over, and nowhere after', async () => {
    // Under A: two segments archived and pruned (markers and audit.pruned events under A; the
    // second prune removes the first one's event), then more events and a checkpoint.
    await record(5);
    const first = await sign(a);
    expect(await archiveAndPrune({ pool, signer: a, cut: { seq: first.seq + 1 }, outDir: dir, actor: 'test' })).toMatchObject({ pruned: true });
    await record(4);
    const pruned = await sign(a);
    expect(await archiveAndPrune({ pool, signer: a, cut: { seq: pruned.seq + 1 }, outDir: dir, actor: 'test' })).toMatchObject({ pruned: true });
    await record(4);
    const second = await sign(a);

    // A dropped before B signed anything: the newest checkpoint is A's, which nothing of B covers yet.
    expect(await verify()).toMatchObject({
      valid: false,
      invalid_checkpoint_seq: second.seq,
      reason: expect.stringMatching(/the newest checkpoint \(seq \d+\) is signed by a retired key/),
    });
    // Without A listed, A's checkpoints are not trusted at all (as before).
    expect(await new AuditService(pool, { checkpointKeys: [b.publicJwk] }).verify()).toMatchObject({
      valid: false,
      invalid_checkpoint_seq: first.seq,
      reason: expect.stringMatching(/not signed by a Writ checkpoint key/),
    });

    // Under B: the whole chain verifies, A's last prune marker vouched for by its audit.pruned
    // event, which B's checkpoint covers, and the first one by the last one's link to it.
    await record(3);
    const third = await sign(b);
    expect(await verify()).toMatchObject({ valid: true, pruned_up_to_seq: pruned.seq, last_checkpoint_seq: third.seq });
    expect((await checkpoints()).map((checkpoint) => checkpoint.kid)).toEqual([a.kid, a.kid, a.kid, b.kid]);

    // A leaked: a checkpoint it signs after B's is refused, though its signature is good.
    await record(2);
    const { rows: head } = await pool.query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_chain_head');
    const forgedCheckpoint = await new AuditCheckpointer(pool, a, { every: 1000, intervalMs: 3_600_000 }).checkpoint();
    expect(forgedCheckpoint).toMatchObject({ seq: Number(head[0].seq), kid: a.kid, prev: checkpointDigest(third) });
    expect(await verify()).toMatchObject({
      valid: false,
      invalid_checkpoint_seq: Number(head[0].seq),
      reason: expect.stringMatching(/signed by a retired key \(WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS\) after one signed by a current master key/),
    });
    await asSuperuser(`DELETE FROM audit_checkpoints WHERE seq = ${Number(head[0].seq)}`);
    const fourth = await sign(b);
    expect(await verify()).toMatchObject({ valid: true, last_checkpoint_seq: fourth.seq });

    // A leaked: a prune marker it signs, at its own second checkpoint, to erase the events before it.
    const { rows: markers } = await pool.query<PruneRow>(`SELECT ${PRUNE_COLUMNS} FROM audit_prunes ORDER BY up_to_seq`);
    const marker = signPruneMarker(
      {
        up_to_seq: second.seq,
        up_to_hash: second.hash,
        checkpoint: checkpointDigest(second),
        exported_sha256: 'c'.repeat(64),
        events: second.seq - pruned.seq,
        prev: pruneMarkerDigest(pruneMarkerFromRow(markers[markers.length - 1])),
        time: new Date().toISOString(),
        actor: 'dba',
      },
      a,
    );
    await asSuperuser(
      `DELETE FROM audit_events WHERE seq <= ${second.seq}`,
      `INSERT INTO audit_prunes (${PRUNE_COLUMNS}) VALUES (${marker.up_to_seq}, '${marker.up_to_hash}', '${marker.checkpoint}', '${marker.exported_sha256}', ${marker.events}, '${marker.prev}', '${marker.time}', 'dba', '${marker.kid}', '${marker.sig}')`,
    );
    // Reported at the first marker it leaves without a voucher (the erased events held the audit.pruned ones).
    expect(await verify()).toMatchObject({
      valid: false,
      invalid_checkpoint_seq: first.seq,
      reason: expect.stringMatching(
        /the prune marker at seq \d+ is signed by a retired key .* but no later marker or checkpoint of a current master key vouches for it/,
      ),
    });
  });

  /** Statements with the append-only triggers off, as a database superuser can. */
  const asSuperuser = async (...statements: string[]) => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SET LOCAL session_replication_role = replica');
      for (const statement of statements) await client.query(statement);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  };
});
