import { randomBytes } from 'node:crypto';
import { Pool } from 'pg';
import { MasterKey } from '@writ/keys';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { checkpointDigest, checkpointKeyring, signCheckpoint, SignedCheckpoint } from './audit-checkpoint';
import type { AuditRecord } from './audit-event';
import { auditRecordLine, verifyExport, verifyExportStream } from './audit-export';
import { chainHash } from './audit-hash';
import { AuditService } from './audit.service';

const signer = new MasterKey(randomBytes(32)).checkpointSigningKey();
const keyring = checkpointKeyring([signer.publicJwk]);
const otherSigner = new MasterKey(randomBytes(32)).checkpointSigningKey();

/** Event data a hostile caller could get quoted, and values that stress the JSON round trip through jsonb. */
function hostileData(n: number): Record<string, unknown> {
  let nested: Record<string, unknown> = { leaf: n };
  for (let depth = 0; depth < 30; depth += 1) nested = { d: nested };
  return {
    n,
    ...JSON.parse('{"__proto__": {"polluted": true}, "constructor": {"prototype": {"x": 1}}}'),
    numbers: [2 ** 60, 1e21, 1.5e-7, 5e-324, Number.MAX_VALUE, -0, 1 / 3, 0.1 + 0.2, 2 ** 53 + 2],
    text: `lone \ud800 and \udc00, NUL \u0000, emoji \ud83d\ude00, line sep \u2028, quote " and \\ backslash`,
    'key\u0000\ud800': 'member names too',
    '10': 'integer-like keys',
    '2': 'sort apart from others',
    '': 'empty key',
    nested,
  };
}

const toLines = (records: AuditRecord[]) => records.map((record) => JSON.stringify(record) + '\n').join('');
const resign = (records: AuditRecord[], from: number) => {
  let prev = records[from].prev_hash;
  return records.map((record, index) => {
    if (index < from) return record;
    const { hash: _h, prev_hash: _p, ...body } = record;
    const hash = chainHash(prev, body);
    const out = { ...record, prev_hash: prev, hash };
    prev = hash;
    return out;
  });
};

describe('verifyExport (offline verification of GET /v1/audit/export)', () => {
  let db: TestDatabase;
  let pool: Pool;
  let audit: AuditService;
  let records: AuditRecord[];
  let checkpoints: SignedCheckpoint[];

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 4 });
    audit = new AuditService(pool, { checkpointKeys: [signer.publicJwk] });
    for (let n = 0; n < 12; n += 1) await audit.record({ type: 'test.hostile', outcome: 'denied', actor: { type: 'anonymous' }, data: hostileData(n) });
    // What the admin API exports: the stored rows, read back through jsonb.
    records = [];
    for await (const record of audit.stream({})) records.push(record);
    const first = signCheckpoint({ seq: 4, hash: records[3].hash, prev: null, time: new Date().toISOString() }, signer);
    const second = signCheckpoint({ seq: 9, hash: records[8].hash, prev: checkpointDigest(first), time: new Date().toISOString() }, signer);
    checkpoints = [first, second];
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  it('round-trips hostile event data through jsonb: the database, the export and the offline verifier agree', async () => {
    expect(records).toHaveLength(12);
    expect(Object.prototype.hasOwnProperty.call(records[0].data, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect((await audit.verify()).valid).toBe(true);
    expect(verifyExport(toLines(records), keyring, { checkpoints })).toEqual({
      valid: true,
      events: 12,
      from_seq: 1,
      to_seq: 12,
      start: 'genesis',
      checkpoints_verified: 2,
      signed_up_to_seq: 9,
      unsigned_events: 3,
      latest_signed_seq: 9,
    });
    // Handed over cut before what is signed: valid as far as it goes, and the verdict says so.
    expect(verifyExport(toLines(records.slice(0, 6)), keyring, { checkpoints })).toMatchObject({ valid: true, to_seq: 6, latest_signed_seq: 9 });
    // Read as a stream, in chunks that cut lines (and escapes) anywhere: the same verdict.
    const text = records.map((record) => auditRecordLine(record) + '\n').join('');
    const chunks = Array.from({ length: Math.ceil(text.length / 7) }, (_, index) => text.slice(index * 7, index * 7 + 7));
    await expect(verifyExportStream(chunks, keyring, { checkpoints })).resolves.toEqual(verifyExport(toLines(records), keyring, { checkpoints }));
    await expect(verifyExportStream(chunks.slice(0, -1), keyring, { checkpoints })).resolves.toMatchObject({
      valid: false,
      reason: expect.stringMatching(/cut short/),
    });
    // A segment that starts right after a signed checkpoint is tied to it.
    expect(verifyExport(toLines(records.slice(4)), keyring, { checkpoints })).toMatchObject({ valid: true, start: 'checkpoint', from_seq: 5 });
    expect(verifyExport(toLines(records.slice(5)), keyring, { checkpoints })).toMatchObject({ valid: true, start: 'unanchored', signed_up_to_seq: 9 });
  });

  it('detects events left out, repeated, moved, edited, forged and re-hashed, and lines the server did not write', () => {
    const check = (lines: string, keys = { checkpoints }) => verifyExport(lines, keyring, keys);
    const omitted = records.filter((record) => record.seq !== 6);
    expect(check(toLines(omitted))).toMatchObject({ valid: false, first_invalid_seq: 6, reason: 'event 6 is missing' });
    const tailCut = toLines(records.slice(0, 11)).slice(0, -20);
    expect(check(tailCut)).toMatchObject({ valid: false, reason: expect.stringMatching(/cut short/) });
    const repeated = [...records.slice(0, 7), records[6], ...records.slice(7)];
    expect(check(toLines(repeated))).toMatchObject({ valid: false, first_invalid_seq: 7, reason: expect.stringMatching(/again or out of order/) });
    const moved = [...records.slice(0, 5), records[6], records[5], ...records.slice(7)];
    expect(check(toLines(moved))).toMatchObject({ valid: false, first_invalid_seq: 6 });
    const edited = records.map((record) => (record.seq === 3 ? { ...record, outcome: 'success' as const } : record));
    expect(check(toLines(edited))).toMatchObject({ valid: false, first_invalid_seq: 3, reason: 'hash does not match the event content' });
    // Rewritten with every later hash recomputed: only a signed checkpoint catches it.
    const rehashed = resign(edited, 2);
    expect(verifyExport(toLines(rehashed), keyring)).toMatchObject({ valid: true, signed_up_to_seq: null, unsigned_events: 12 });
    expect(check(toLines(rehashed))).toMatchObject({ valid: false, first_invalid_seq: 4, invalid_checkpoint_seq: 4 });
    const forged: AuditRecord = { ...records[5], id: '00000000-0000-4000-8000-000000000000', type: 'admin.forged' };
    const inserted = resign([...records.slice(0, 5), forged, ...records.slice(5).map((record) => ({ ...record, seq: record.seq + 1 }))], 5);
    expect(check(toLines(inserted))).toMatchObject({ valid: false, first_invalid_seq: 9, invalid_checkpoint_seq: 9 });
    // Members the hash does not cover, or given twice (JSON readers disagree on which wins).
    const lines = toLines(records).split('\n');
    const withExtra = [...lines.slice(0, 2), lines[2].replace(/}$/, ',"note":"approved by CFO"}'), ...lines.slice(3)].join('\n');
    expect(check(withExtra)).toMatchObject({ valid: false, first_invalid_seq: 3, reason: expect.stringMatching(/as the server wrote it/) });
    const twice = [...lines.slice(0, 2), lines[2].replace('"outcome":"denied"', '"outcome":"success","outcome":"denied"'), ...lines.slice(3)].join('\n');
    expect(check(twice)).toMatchObject({ valid: false, first_invalid_seq: 3 });
    const reformatted = [...lines.slice(0, 2), JSON.stringify(JSON.parse(lines[2]), null, 1).replace(/\n/g, ''), ...lines.slice(3)].join('\n');
    expect(check(reformatted)).toMatchObject({ valid: false, first_invalid_seq: 3 });
    expect(check('')).toMatchObject({ valid: false, reason: 'the export holds no event' });
  });

  it('trusts only checkpoints signed by the given key, and reports two signed heads for one seq (a restarted chain)', () => {
    const foreign = signCheckpoint({ seq: 4, hash: records[3].hash, prev: null, time: new Date().toISOString() }, otherSigner);
    expect(verifyExport(toLines(records), keyring, { checkpoints: [{ ...foreign, kid: signer.kid }] })).toMatchObject({
      valid: false,
      invalid_checkpoint_seq: 4,
      reason: expect.stringMatching(/not signed by a trusted key/),
    });
    const restarted = signCheckpoint({ seq: 9, hash: 'f'.repeat(64), prev: null, time: new Date().toISOString() }, signer);
    expect(verifyExport(toLines(records), keyring, { checkpoints: [...checkpoints, restarted] })).toMatchObject({
      valid: false,
      invalid_checkpoint_seq: 9,
      reason: expect.stringMatching(/rewritten or restarted/),
    });
    // An export that starts after a checkpoint but not from its hash.
    const detached = resign(
      records.slice(4).map((record, index) => (index === 0 ? { ...record, prev_hash: 'e'.repeat(64) } : record)),
      0,
    );
    expect(verifyExport(toLines(detached), keyring, { checkpoints })).toMatchObject({ valid: false, first_invalid_seq: 5, invalid_checkpoint_seq: 4 });
  });

  it('reports a time no writer stores (sub-millisecond, infinite, past what JavaScript dates hold) as an invalid event, never a failure', async () => {
    const [victim] = await audit.record({ type: 'test.victim', outcome: 'info', actor: { type: 'system' } });
    const setTime = async (sql: string, values: unknown[]) => {
      const superuser = await pool.connect();
      try {
        await superuser.query('BEGIN');
        await superuser.query('SET LOCAL session_replication_role = replica');
        await superuser.query(sql, values);
        await superuser.query('COMMIT');
      } finally {
        superuser.release();
      }
    };
    // 0.9 ms later: a JavaScript Date (and so the hash) cannot tell, the database's readers can.
    await setTime(`UPDATE audit_events SET occurred_at = occurred_at + interval '900 microseconds' WHERE seq = $1`, [victim.seq]);
    await expect(audit.verify()).resolves.toMatchObject({
      valid: false,
      first_invalid_seq: victim.seq,
      reason: expect.stringMatching(/below the millisecond/),
    });
    for (const time of ['infinity', '-infinity', '294276-01-01T00:00:00Z']) {
      await setTime('UPDATE audit_events SET occurred_at = $2 WHERE seq = $1', [victim.seq, time]);
      await expect(audit.verify()).resolves.toMatchObject({ valid: false, first_invalid_seq: victim.seq, reason: 'hash does not match the event content' });
      const listed = await audit.list({}, { limit: 1 });
      expect(listed.items[0]).toMatchObject({ seq: victim.seq, occurred_at: expect.stringMatching(/^not a time/) });
    }
    await setTime('UPDATE audit_events SET occurred_at = $2 WHERE seq = $1', [victim.seq, victim.occurred_at]);
    expect((await audit.verify()).valid).toBe(true);
  });

  it('reports data a superuser nested too deep to canonicalise as an invalid event, never a failed verification', async () => {
    const nested = (levels: number) => '{"d":'.repeat(levels) + '{"leaf":1}' + '}'.repeat(levels);
    const [extra] = await audit.record({ type: 'test.victim', outcome: 'info', actor: { type: 'system' } });
    const superuser = await pool.connect();
    try {
      // As deep as PostgreSQL's stack lets jsonb nest (deeper than JavaScript canonicalises).
      for (const levels of [16_000, 12_000, 8_000, 6_000, 4_000]) {
        await superuser.query('BEGIN');
        await superuser.query('SET LOCAL session_replication_role = replica');
        try {
          await superuser.query('UPDATE audit_events SET data = $2::jsonb WHERE seq = $1', [extra.seq, nested(levels)]);
          await superuser.query('COMMIT');
          break;
        } catch {
          await superuser.query('ROLLBACK');
        }
      }
    } finally {
      superuser.release();
    }
    await expect(audit.verify()).resolves.toMatchObject({ valid: false, first_invalid_seq: extra.seq, reason: expect.stringMatching(/nested too deep/) });
    // Offline too: the line as a server would write it (JSON.stringify itself overflows on it).
    const deepLine = JSON.stringify({ ...extra, seq: 13, prev_hash: records[11].hash, data: {} }).replace('"data":{}', `"data":${nested(8_000)}`);
    expect(verifyExport(toLines(records) + deepLine + '\n', keyring, { checkpoints })).toMatchObject({
      valid: false,
      first_invalid_seq: 13,
      reason: expect.stringMatching(/too deep/),
    });
  });
});
