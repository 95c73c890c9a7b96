import type { AuditRecord } from './audit-event';
import { verifiedChainHash } from './audit-hash';
import { CheckpointKeyring, checkpointSignatureValid, parseCheckpointLines, SignedCheckpoint } from './audit-checkpoint';
import { isPruneMarker, pruneMarkerSignatureValid, SignedPruneMarker } from './audit-prune';

const GENESIS = '0'.repeat(64);
const HEX64 = /^[0-9a-f]{64}$/;
const STRINGS = ['id', 'occurred_at', 'type', 'outcome', 'actor_type', 'prev_hash', 'hash'] as const;
const NULLABLE = ['actor_id', 'agent_id', 'task_id', 'connector_id'] as const;

/** What {@link verifyExport} found in an export of `GET /v1/audit/export`. */
export interface ExportVerification {
  valid: boolean;
  /** Events read (up to the first problem). */
  events: number;
  from_seq?: number;
  to_seq?: number;
  /** How the first event is tied to what came before: seq 1, a signed checkpoint or prune marker at `from_seq - 1`, or nothing. */
  start?: 'genesis' | 'checkpoint' | 'prune_marker' | 'unanchored';
  /** Signed checkpoints inside the export whose hash the chain has. */
  checkpoints_verified: number;
  /** The last event a signed checkpoint covers: the export is proven up to it, not beyond. */
  signed_up_to_seq: number | null;
  /** Events after `signed_up_to_seq`: consistent, but nothing signed vouches for them yet. */
  unsigned_events: number;
  /**
   * The highest `seq` any given checkpoint or prune marker signs (null without any): an export
   * whose `to_seq` is below it ends before what was already signed (older, or cut short).
   */
  latest_signed_seq?: number | null;
  first_invalid_seq?: number;
  invalid_checkpoint_seq?: number;
  reason?: string;
}

/** Every character outside printable ASCII that JSON.stringify leaves as it is (it only appears inside strings). */
const NOT_ASCII = /[\u007f-\uffff]/g;

/**
 * One record as a line of an export or an archive (without its newline): `JSON.stringify` of
 * the record, every character past printable ASCII written as a `\uXXXX` escape. The same JSON
 * value, but no reader splits it at U+2028, U+2029 or U+0085 (Python's `splitlines` does), no
 * bidirectional control (U+202E…) reorders what a person reading the file sees, and no
 * encoding or normalisation on the way changes its bytes.
 */
export function auditRecordLine(record: AuditRecord): string {
  return JSON.stringify(record).replace(NOT_ASCII, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The record of one line of an export or an archive's `events.jsonl`, or why it is not one as
 * Writ writes it (`JSON.stringify` of the record, members in their order, nothing else).
 */
export function parseRecordLine(line: string): AuditRecord | string {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return 'is not JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'is not a record';
  const record = value as Record<string, unknown>;
  if (!Number.isSafeInteger(record.seq) || (record.seq as number) < 1) return 'has no valid seq';
  for (const name of STRINGS) if (typeof record[name] !== 'string') return `has no string ${name}`;
  for (const name of NULLABLE) if (record[name] !== null && typeof record[name] !== 'string') return `has a ${name} that is neither a string nor null`;
  if (typeof record.data !== 'object' || record.data === null || Array.isArray(record.data)) return 'has no data object';
  if (!HEX64.test(record.prev_hash as string) || !HEX64.test(record.hash as string)) return 'has a hash that is not 64 hex digits';
  // Members in the server's order, nothing else: a line the server did not write byte for byte
  // (an added member the hash does not cover, a member given twice that other JSON readers
  // resolve differently, another spelling of a number or a string) is refused.
  const canonical: AuditRecord = {
    seq: record.seq as number,
    id: record.id as string,
    occurred_at: record.occurred_at as string,
    type: record.type as string,
    outcome: record.outcome as AuditRecord['outcome'],
    actor_type: record.actor_type as AuditRecord['actor_type'],
    actor_id: record.actor_id as string | null,
    agent_id: record.agent_id as string | null,
    task_id: record.task_id as string | null,
    connector_id: record.connector_id as string | null,
    data: record.data as Record<string, unknown>,
    prev_hash: record.prev_hash as string,
    hash: record.hash as string,
  };
  let written: string;
  try {
    written = JSON.stringify(canonical);
  } catch {
    return 'nests too deep to be an event of the log';
  }
  // Exports and archives written before lines were escaped to ASCII are JSON.stringify as is.
  if (written !== line && auditRecordLine(canonical) !== line) return 'is not the record as the server wrote it (extra, repeated or reformatted members)';
  return canonical;
}

type Anchor = { hash: string; source: 'checkpoint' | 'prune_marker' };
/** The checkpoints and prune markers (from the checkpoint file) an export is checked against. */
export interface ExportAnchors {
  checkpoints?: readonly SignedCheckpoint[];
  markers?: readonly SignedPruneMarker[];
}

const NOTHING = { events: 0, checkpoints_verified: 0, signed_up_to_seq: null, unsigned_events: 0 } as const;

/** The signed hashes by `seq`, or the first checkpoint or marker that cannot be trusted. */
function signedHashes(keyring: CheckpointKeyring, anchors: ExportAnchors): Map<number, Anchor> | ExportVerification {
  const signed = new Map<number, Anchor>();
  const refuse = (seq: number, reason: string): ExportVerification => ({ valid: false, ...NOTHING, invalid_checkpoint_seq: seq, reason });
  for (const checkpoint of anchors.checkpoints ?? []) {
    if (!checkpointSignatureValid(checkpoint, keyring)) return refuse(checkpoint.seq, `the checkpoint at seq ${checkpoint.seq} is not signed by a trusted key`);
    const twin = signed.get(checkpoint.seq);
    if (twin && twin.hash !== checkpoint.hash) {
      return refuse(checkpoint.seq, `two signed checkpoints at seq ${checkpoint.seq} hold different hashes: the chain was rewritten or restarted`);
    }
    signed.set(checkpoint.seq, { hash: checkpoint.hash, source: 'checkpoint' });
  }
  for (const marker of anchors.markers ?? []) {
    if (!pruneMarkerSignatureValid(marker, keyring))
      return refuse(marker.up_to_seq, `the prune marker at seq ${marker.up_to_seq} is not signed by a trusted key`);
    const twin = signed.get(marker.up_to_seq);
    if (twin && twin.hash !== marker.up_to_hash)
      return refuse(marker.up_to_seq, `the prune marker at seq ${marker.up_to_seq} disagrees with a signed checkpoint`);
    if (!twin) signed.set(marker.up_to_seq, { hash: marker.up_to_hash, source: 'prune_marker' });
  }
  return signed;
}

/** The walk of an export, one line at a time (so that an export of any size is read as a stream). */
class ExportWalk {
  private lines = 0;
  private from: number | undefined;
  private start: ExportVerification['start'];
  private expected = 0;
  private prevHash = '';
  private verified = 0;
  private signedUpTo: number | null = null;

  constructor(private readonly signed: Map<number, Anchor>) {}

  /** Checks the next line (without its newline); returns the verdict when it is invalid. */
  line(line: string): ExportVerification | undefined {
    const index = this.lines;
    this.lines += 1;
    const fail = (reason: string, seq?: number, extra: Partial<ExportVerification> = {}): ExportVerification => ({
      valid: false,
      events: index,
      ...(this.from !== undefined ? { from_seq: this.from } : {}),
      ...(this.start ? { start: this.start } : {}),
      checkpoints_verified: this.verified,
      signed_up_to_seq: this.signedUpTo,
      unsigned_events: 0,
      ...(seq !== undefined ? { first_invalid_seq: seq } : {}),
      reason,
      ...extra,
    });
    const record = parseRecordLine(line);
    if (typeof record === 'string') return fail(`line ${index + 1} ${record}`, this.from === undefined ? undefined : this.expected);
    if (this.from === undefined) {
      this.from = record.seq;
      this.expected = record.seq;
      const before = this.signed.get(record.seq - 1);
      if (record.seq === 1) {
        if (record.prev_hash !== GENESIS) return fail('event 1 does not start from the genesis hash', 1);
        this.start = 'genesis';
      } else if (before) {
        if (record.prev_hash !== before.hash) {
          return fail(`prev_hash of event ${record.seq} is not the hash signed at seq ${record.seq - 1}`, record.seq, {
            invalid_checkpoint_seq: record.seq - 1,
          });
        }
        this.start = before.source;
      } else {
        this.start = 'unanchored';
      }
      this.prevHash = record.prev_hash;
    }
    if (record.seq < this.expected) return fail(`event ${record.seq} appears again or out of order after event ${this.expected - 1}`, record.seq);
    if (record.seq > this.expected) return fail(`event ${this.expected} is missing`, this.expected);
    if (record.prev_hash !== this.prevHash) return fail('prev_hash does not match the previous event', record.seq);
    const { hash, prev_hash: _prev, ...body } = record;
    if (verifiedChainHash(this.prevHash, body) !== hash) return fail('hash does not match the event content', record.seq);
    const anchor = this.signed.get(record.seq);
    if (anchor && anchor.hash !== hash) {
      return fail(`the hash at seq ${record.seq} is not the one signed for it: events up to ${record.seq} were rewritten`, record.seq, {
        invalid_checkpoint_seq: record.seq,
      });
    }
    if (anchor) {
      this.verified += anchor.source === 'checkpoint' ? 1 : 0;
      this.signedUpTo = record.seq;
    }
    this.prevHash = hash;
    this.expected += 1;
    return undefined;
  }

  /** The verdict once every line was read; `rest` is what followed the last newline. */
  end(rest: string): ExportVerification {
    let latest: number | null = null;
    for (const seq of this.signed.keys()) latest = latest === null || seq > latest ? seq : latest;
    if (rest !== '') return { valid: false, ...NOTHING, events: this.lines, reason: 'the export does not end with a complete line (cut short?)' };
    if (this.lines === 0) return { valid: false, ...NOTHING, reason: 'the export holds no event' };
    const to = this.expected - 1;
    return {
      valid: true,
      events: this.lines,
      from_seq: this.from,
      to_seq: to,
      start: this.start,
      checkpoints_verified: this.verified,
      signed_up_to_seq: this.signedUpTo,
      unsigned_events: this.signedUpTo === null ? this.lines : to - this.signedUpTo,
      latest_signed_seq: latest,
    };
  }
}

/**
 * Verifies offline an export of `GET /v1/audit/export` (JSON lines, as downloaded, unfiltered),
 * read as a stream of text chunks: each line exactly as the server writes it, `seq` consecutive
 * (no event left out, repeated or moved), each `prev_hash` the previous `hash`, each `hash`
 * recomputed, and, against checkpoints and prune markers signed by a key of `keyring` (kept
 * outside the database: the checkpoint file and the public key), the signed hash at every
 * checkpointed `seq` inside the export and where the export starts. Two signed checkpoints that
 * disagree about one `seq` mean the chain was rewritten or restarted. Events after the last
 * signed checkpoint are reported (`unsigned_events`): whoever can write the database could
 * have rewritten them.
 */
export async function verifyExportStream(
  chunks: AsyncIterable<string> | Iterable<string>,
  keyring: CheckpointKeyring,
  anchors: ExportAnchors = {},
): Promise<ExportVerification> {
  const signed = signedHashes(keyring, anchors);
  if (!(signed instanceof Map)) return signed;
  const walk = new ExportWalk(signed);
  let rest = '';
  for await (const chunk of chunks) {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      const invalid = walk.line(line);
      if (invalid) return invalid;
    }
  }
  return walk.end(rest);
}

/** {@link verifyExportStream} of an export held whole in memory. */
export function verifyExport(text: string, keyring: CheckpointKeyring, anchors: ExportAnchors = {}): ExportVerification {
  const signed = signedHashes(keyring, anchors);
  if (!(signed instanceof Map)) return signed;
  const walk = new ExportWalk(signed);
  const lines = text.split('\n');
  const rest = lines.pop()!;
  for (const line of lines) {
    const invalid = walk.line(line);
    if (invalid) return invalid;
  }
  return walk.end(rest);
}

/** The prune markers of a checkpoint file (JSON lines; checkpoints and unreadable lines are left to {@link parseCheckpointLines}). */
export function parsePruneMarkerLines(text: string): SignedPruneMarker[] {
  const markers: SignedPruneMarker[] = [];
  for (const line of text.split('\n')) {
    try {
      const value: unknown = JSON.parse(line);
      if (isPruneMarker(value)) markers.push(value);
    } catch {
      // Not JSON: parseCheckpointLines names the line.
    }
  }
  return markers;
}
