import { createHash, verify as verifySignature } from 'node:crypto';
import { canonicalJsonText } from './audit-hash';
import type { CheckpointKeyring, CheckpointSigner } from './audit-checkpoint';
import { storedTime } from './audit-time';

/** What a prune marker signs: the prefix of the chain removed, and what was exported. */
export interface PruneMarkerBody {
  v: 1;
  /** Domain separation: a marker's signature can never pass for a checkpoint's. */
  kind: 'prune';
  /** The last event removed; a signed checkpoint has this seq. */
  up_to_seq: number;
  /** The chain's hash at `up_to_seq`: the `prev_hash` of the first remaining event. */
  up_to_hash: string;
  /** {@link checkpointDigest} of the checkpoint at `up_to_seq`. */
  checkpoint: string;
  /** SHA-256 (hex) of the exported `events.jsonl`. */
  exported_sha256: string;
  /** How many events this prune removed (those after the previous marker). */
  events: number;
  /** {@link pruneMarkerDigest} of the previous marker; null for the first. */
  prev: string | null;
  /** When it was signed (ISO 8601, UTC). */
  time: string;
  /** Who ran it (the operator's name, or `cli`). */
  actor: string;
  /** Key id of the checkpoint key that signed it. */
  kid: string;
}

/** A prune marker with its Ed25519 signature (base64url) over the JCS of its body. */
export interface SignedPruneMarker extends PruneMarkerBody {
  sig: string;
}

/** A row of `audit_prunes`. */
export interface PruneRow {
  up_to_seq: string;
  up_to_hash: string;
  checkpoint_digest: string;
  exported_sha256: string;
  events: string;
  prev: string | null;
  pruned_at: Date;
  actor: string;
  kid: string;
  signature: string;
}

/** The columns of `audit_prunes`, in {@link PruneRow} order. */
export const PRUNE_COLUMNS = 'up_to_seq, up_to_hash, checkpoint_digest, exported_sha256, events, prev, pruned_at, actor, kid, signature';

/** A stored row as the signed marker it records. */
export function pruneMarkerFromRow(row: PruneRow): SignedPruneMarker {
  return {
    v: 1,
    kind: 'prune',
    up_to_seq: Number(row.up_to_seq),
    up_to_hash: row.up_to_hash,
    checkpoint: row.checkpoint_digest,
    exported_sha256: row.exported_sha256,
    events: Number(row.events),
    prev: row.prev,
    time: storedTime(row.pruned_at),
    actor: row.actor,
    kid: row.kid,
    sig: row.signature,
  };
}

/** The bytes a marker's signature covers: RFC 8785 canonical JSON of its body. */
export function pruneMarkerSigningInput(body: PruneMarkerBody): Buffer {
  const { v, kind, up_to_seq, up_to_hash, checkpoint, exported_sha256, events, prev, time, actor, kid } = body;
  return Buffer.from(canonicalJsonText({ v, kind, up_to_seq, up_to_hash, checkpoint, exported_sha256, events, prev, time, actor, kid }), 'utf8');
}

/** Signs a prune marker with the checkpoint key. */
export function signPruneMarker(body: Omit<PruneMarkerBody, 'v' | 'kind' | 'kid'>, signer: CheckpointSigner): SignedPruneMarker {
  const full: PruneMarkerBody = { v: 1, kind: 'prune', ...body, kid: signer.kid };
  return { ...full, sig: signer.sign(pruneMarkerSigningInput(full)).toString('base64url') };
}

/** SHA-256 (hex) of a signed marker: the next marker's `prev`. */
export function pruneMarkerDigest(marker: SignedPruneMarker): string {
  return createHash('sha256').update(pruneMarkerSigningInput(marker)).update(marker.sig, 'utf8').digest('hex');
}

/** True when the marker is well formed and signed by a key of the ring. */
export function pruneMarkerSignatureValid(marker: SignedPruneMarker, keys: CheckpointKeyring): boolean {
  const key = keys.get(marker.kid);
  if (!key || marker.v !== 1 || marker.kind !== 'prune' || typeof marker.sig !== 'string') return false;
  try {
    return verifySignature(null, pruneMarkerSigningInput(marker), key, Buffer.from(marker.sig, 'base64url'));
  } catch {
    return false;
  }
}

/** True for a JSON value shaped like a prune marker (a line of the checkpoint file). */
export function isPruneMarker(value: unknown): value is SignedPruneMarker {
  const m = value as Partial<SignedPruneMarker> | null;
  return (
    typeof m === 'object' &&
    m !== null &&
    m.v === 1 &&
    m.kind === 'prune' &&
    typeof m.up_to_seq === 'number' &&
    Number.isSafeInteger(m.up_to_seq) &&
    m.up_to_seq > 0 &&
    typeof m.up_to_hash === 'string' &&
    typeof m.checkpoint === 'string' &&
    typeof m.exported_sha256 === 'string' &&
    typeof m.events === 'number' &&
    (m.prev === null || typeof m.prev === 'string') &&
    typeof m.time === 'string' &&
    typeof m.actor === 'string' &&
    typeof m.kid === 'string' &&
    typeof m.sig === 'string'
  );
}
