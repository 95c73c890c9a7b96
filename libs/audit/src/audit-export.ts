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

/**
 * Verifies offline an export of `GET /v1/audit/export` (JSON lines, as downloaded, unfiltered):
 * each line exactly as the server writes it, `seq` consecutive (no event left out, repeated
 * or moved), each `prev_hash` the previous `hash`, each `hash` recomputed, and, against
 * checkpoints and prune markers signed by a key of `keyring` (kept outside the database: the
 * checkpoint file and the public key), the signed hash at every checkpointed `seq` inside the
 * export and where the export starts. Two signed checkpoints that disagree about one `seq` mean
 * the chain was rewritten or restarted. Events after the last signed checkpoint are reported
 * (`unsigned_events`): whoever can write the database could have rewritten them.
 */
export function verifyExport(
  text: string,
  keyring: CheckpointKeyring,
  anchors: { checkpoints?: readonly SignedCheckpoint[]; markers?: readonly SignedPruneMarker[] } = {},
): ExportVerification {
  const signed = new Map<number, { hash: string; source: 'checkpoint' | 'prune_marker' }>();
  const empty = { events: 0, checkpoints_verified: 0, signed_up_to_seq: null, unsigned_events: 0 };
  for (const checkpoint of anchors.checkpoints ?? []) {
    if (!checkpointSignatureValid(checkpoint, keyring)) {
      return {
        valid: false,
        ...empty,
        invalid_checkpoint_seq: checkpoint.seq,
        reason: `the checkpoint at seq ${checkpoint.seq} is not signed by a trusted key`,
      };
    }
    const twin = signed.get(checkpoint.seq);
    if (twin && twin.hash !== checkpoint.hash) {
      return {
        valid: false,
        ...empty,
        invalid_checkpoint_seq: checkpoint.seq,
        reason: `two signed checkpoints at seq ${checkpoint.seq} hold different hashes: the chain was rewritten or restarted`,
      };
    }
    signed.set(checkpoint.seq, { hash: checkpoint.hash, source: 'checkpoint' });
  }
  for (const marker of anchors.markers ?? []) {
    if (!pruneMarkerSignatureValid(marker, keyring)) {
      return {
        valid: false,
        ...empty,
        invalid_checkpoint_seq: marker.up_to_seq,
        reason: `the prune marker at seq ${marker.up_to_seq} is not signed by a trusted key`,
      };
    }
    const twin = signed.get(marker.up_to_seq);
    if (twin && twin.hash !== marker.up_to_hash) {
      return {
        valid: false,
        ...empty,
        invalid_checkpoint_seq: marker.up_to_seq,
        reason: `the prune marker at seq ${marker.up_to_seq} disagrees with a signed checkpoint`,
      };
    }
    if (!twin) signed.set(marker.up_to_seq, { hash: marker.up_to_hash, source: 'prune_marker' });
  }

  if (text === '') return { valid: false, ...empty, reason: 'the export holds no event' };
  if (!text.endsWith('\n')) return { valid: false, ...empty, reason: 'the export does not end with a complete line (cut short?)' };
  const lines = text.slice(0, -1).split('\n');
  let from: number | undefined;
  let start: ExportVerification['start'];
  let expected = 0;
  let prevHash = '';
  let verified = 0;
  let signedUpTo: number | null = null;
  for (const [index, line] of lines.entries()) {
    const parsed = parseRecordLine(line);
    const fail = (reason: string, seq?: number, extra: Partial<ExportVerification> = {}): ExportVerification => ({
      valid: false,
      events: index,
      ...(from !== undefined ? { from_seq: from } : {}),
      ...(start ? { start } : {}),
      checkpoints_verified: verified,
      signed_up_to_seq: signedUpTo,
      unsigned_events: 0,
      ...(seq !== undefined ? { first_invalid_seq: seq } : {}),
      reason,
      ...extra,
    });
    if (typeof parsed === 'string') return fail(`line ${index + 1} ${parsed}`, from === undefined ? undefined : expected);
    const record = parsed;
    if (from === undefined) {
      from = record.seq;
      expected = record.seq;
      const before = signed.get(record.seq - 1);
      if (record.seq === 1) {
        if (record.prev_hash !== GENESIS) return fail('event 1 does not start from the genesis hash', 1);
        start = 'genesis';
      } else if (before) {
        if (record.prev_hash !== before.hash) {
          return fail(`prev_hash of event ${record.seq} is not the hash signed at seq ${record.seq - 1}`, record.seq, {
            invalid_checkpoint_seq: record.seq - 1,
          });
        }
        start = before.source;
      } else {
        start = 'unanchored';
      }
      prevHash = record.prev_hash;
    }
    if (record.seq < expected) return fail(`event ${record.seq} appears again or out of order after event ${expected - 1}`, record.seq);
    if (record.seq > expected) return fail(`event ${expected} is missing`, expected);
    if (record.prev_hash !== prevHash) return fail('prev_hash does not match the previous event', record.seq);
    const { hash, prev_hash: _prev, ...body } = record;
    const recomputed = verifiedChainHash(prevHash, body);
    if (recomputed !== hash) return fail('hash does not match the event content', record.seq);
    const anchor = signed.get(record.seq);
    if (anchor && anchor.hash !== hash) {
      return fail(`the hash at seq ${record.seq} is not the one signed for it: events up to ${record.seq} were rewritten`, record.seq, {
        invalid_checkpoint_seq: record.seq,
      });
    }
    if (anchor) {
      verified += anchor.source === 'checkpoint' ? 1 : 0;
      signedUpTo = record.seq;
    }
    prevHash = hash;
    expected += 1;
  }
  const to = expected - 1;
  return {
    valid: true,
    events: lines.length,
    from_seq: from,
    to_seq: to,
    start,
    checkpoints_verified: verified,
    signed_up_to_seq: signedUpTo,
    unsigned_events: signedUpTo === null ? lines.length : to - signedUpTo,
  };
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
