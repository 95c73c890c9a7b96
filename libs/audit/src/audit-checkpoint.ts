import { createHash, createPublicKey, KeyObject, verify as verifySignature } from 'node:crypto';
import { canonicalJsonText } from './audit-hash';
import { isPruneMarker } from './audit-prune';

/** Version of the checkpoint format (the `v` member). */
export const CHECKPOINT_VERSION = 1;

/** What a checkpoint signs: the chain head at `seq` and the checkpoint before it. */
export interface CheckpointBody {
  v: typeof CHECKPOINT_VERSION;
  /** Sequence number of the last event covered. */
  seq: number;
  /** The chain's `hash` at `seq`. */
  hash: string;
  /** {@link checkpointDigest} of the previous checkpoint; null for the first. */
  prev: string | null;
  /** When it was signed (ISO 8601, UTC). */
  time: string;
  /** Key id of the signing key (RFC 7638 thumbprint of its public JWK). */
  kid: string;
}

/** A checkpoint with its Ed25519 signature (base64url) over the JCS of its body. */
export interface SignedCheckpoint extends CheckpointBody {
  sig: string;
}

/** A checkpoint verification key as published: an Ed25519 public JWK. */
export interface CheckpointPublicKey {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  kid: string;
  alg: 'EdDSA';
  use: 'sig';
}

/** What signs checkpoints: a key the database never holds (see libs/keys). */
export interface CheckpointSigner {
  readonly kid: string;
  readonly publicJwk: CheckpointPublicKey;
  /** Ed25519 signature of `data`. */
  sign(data: Buffer): Buffer;
}

/** The bytes a checkpoint's signature covers: RFC 8785 canonical JSON of its body. */
export function checkpointSigningInput(body: CheckpointBody): Buffer {
  return Buffer.from(canonicalJsonText({ v: body.v, seq: body.seq, hash: body.hash, prev: body.prev, time: body.time, kid: body.kid }), 'utf8');
}

/** Signs a checkpoint body. */
export function signCheckpoint(body: Omit<CheckpointBody, 'v' | 'kid'>, signer: CheckpointSigner): SignedCheckpoint {
  const full: CheckpointBody = { v: CHECKPOINT_VERSION, ...body, kid: signer.kid };
  return { ...full, sig: signer.sign(checkpointSigningInput(full)).toString('base64url') };
}

/** SHA-256 (hex) of a signed checkpoint's canonical JSON: the next checkpoint's `prev`. */
export function checkpointDigest(checkpoint: SignedCheckpoint): string {
  return createHash('sha256').update(checkpointSigningInput(checkpoint)).update(checkpoint.sig, 'utf8').digest('hex');
}

/** Verification keys by kid. */
export type CheckpointKeyring = ReadonlyMap<string, KeyObject>;

/** A keyring from public JWKs; anything but an Ed25519 public key is refused. */
export function checkpointKeyring(keys: readonly CheckpointPublicKey[]): CheckpointKeyring {
  const ring = new Map<string, KeyObject>();
  for (const jwk of keys) {
    if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string' || typeof jwk.kid !== 'string') {
      throw new Error('a checkpoint key must be an Ed25519 public JWK with a kid');
    }
    ring.set(jwk.kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' }));
  }
  return ring;
}

/** True when the checkpoint is well formed and signed by a key of the ring. */
export function checkpointSignatureValid(checkpoint: SignedCheckpoint, keys: CheckpointKeyring): boolean {
  const key = keys.get(checkpoint.kid);
  if (!key || checkpoint.v !== CHECKPOINT_VERSION || typeof checkpoint.sig !== 'string') return false;
  try {
    return verifySignature(null, checkpointSigningInput(checkpoint), key, Buffer.from(checkpoint.sig, 'base64url'));
  } catch {
    return false;
  }
}

/** Thrown when a checkpoint file or a public key file cannot be read as one. */
export class CheckpointFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointFileError';
  }
}

function isCheckpoint(value: unknown): value is SignedCheckpoint {
  const c = value as Partial<SignedCheckpoint> | null;
  return (
    typeof c === 'object' &&
    c !== null &&
    c.v === CHECKPOINT_VERSION &&
    typeof c.seq === 'number' &&
    Number.isSafeInteger(c.seq) &&
    c.seq > 0 &&
    typeof c.hash === 'string' &&
    /^[0-9a-f]{64}$/.test(c.hash) &&
    (c.prev === null || (typeof c.prev === 'string' && /^[0-9a-f]{64}$/.test(c.prev))) &&
    typeof c.time === 'string' &&
    typeof c.kid === 'string' &&
    typeof c.sig === 'string'
  );
}

/**
 * The checkpoints of a JSON-lines file (one signed checkpoint per line). A malformed line is
 * an error naming the line, except a last line cut short by a crash mid-write, which is
 * skipped (it was never acknowledged).
 */
export function parseCheckpointLines(text: string): SignedCheckpoint[] {
  const lines = text.split('\n');
  const checkpoints: SignedCheckpoint[] = [];
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      if (index === lines.length - 1) return;
      throw new CheckpointFileError(`line ${index + 1} of the checkpoint file is not JSON`);
    }
    // Prune markers share the file (docs/audit.md#prune-markers); they are read by parsePruneMarkerLines.
    if (isPruneMarker(value)) return;
    if (!isCheckpoint(value)) throw new CheckpointFileError(`line ${index + 1} of the checkpoint file is not a checkpoint`);
    checkpoints.push(value);
  });
  return checkpoints;
}

/** The keys of a public key file: a JWKS (`{keys: [...]}`) or a single JWK. */
export function parsePublicKeys(text: string): CheckpointPublicKey[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CheckpointFileError('the public key file is not JSON');
  }
  const keys = (value as { keys?: unknown }).keys ?? [value];
  if (!Array.isArray(keys) || keys.length === 0) throw new CheckpointFileError('the public key file holds no key');
  try {
    checkpointKeyring(keys as CheckpointPublicKey[]);
  } catch (error) {
    throw new CheckpointFileError(`the public key file: ${(error as Error).message}`);
  }
  return keys as CheckpointPublicKey[];
}
