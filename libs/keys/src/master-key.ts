import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDirectory, readPrivateFile } from '@writ/database';
import { CheckpointSigningKey, type CheckpointVerificationJwk } from './checkpoint-signing-key';

/** `01 | iv | tag | body`, no key id (tried under every configured key): written outside rotations, as releases before key ids did. */
const SEAL_V1 = 1;
/** `02 | key id (8) | iv | tag | body`; the header is authenticated with the context. */
const SEAL_V2 = 2;
const KEY_ID_BYTES = 8;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** The version of row integrity tags ({@link MasterKey.rowMac}). */
const ROW_MAC_VERSION = 'v1';
/** What names the kind of a tagged row: no separator can hide in it. */
const ROW_KIND = /^[a-z][a-z_]{0,63}$/;

/** Thrown when sealed data cannot be opened: wrong master key, wrong context, or tampering. */
export class UnsealError extends Error {
  constructor() {
    super('sealed value could not be opened (wrong master key, context or tampered data)');
    this.name = 'UnsealError';
  }
}

/** The subkeys of one 32-byte master key, each HKDF-SHA256 with its own info. */
class DerivedKeys {
  /** Names the key in sealed values' headers; reveals nothing about it. */
  readonly id: Buffer;
  /** {@link id} in hex, as row tags name it. */
  readonly idHex: string;
  readonly sealKey: Buffer;
  readonly auditKey: Buffer;
  readonly fingerprintKey: Buffer;
  readonly checkpointSeed: Buffer;
  readonly rowMacKey: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new Error('the master key must be 32 bytes');
    const derive = (info: string, bytes = 32) => Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), info, bytes));
    this.id = derive('writ/seal-key-id/v1', KEY_ID_BYTES);
    this.idHex = this.id.toString('hex');
    this.sealKey = derive('writ/seal/v1');
    this.auditKey = derive('writ/audit-hmac/v1');
    this.fingerprintKey = derive('writ/fingerprint/v1');
    this.checkpointSeed = derive('writ/audit-checkpoint/ed25519/v1');
    this.rowMacKey = derive('writ/row-mac/v1');
  }

  /** HMAC-SHA256 under the row subkey of `kind`, a newline (never in a kind) and the row's canonical text. */
  rowMac(kind: string, canonicalText: string): Buffer {
    return createHmac('sha256', this.rowMacKey).update(kind, 'utf8').update('\n').update(canonicalText, 'utf8').digest();
  }

  open(iv: Buffer, tag: Buffer, body: Buffer, aad: Buffer): Buffer {
    const decipher = createDecipheriv('aes-256-gcm', this.sealKey, iv);
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(body), decipher.final()]);
  }
}

/**
 * Everything derived from `WRIT_MASTER_KEY` (the current key) and `WRIT_MASTER_KEY_PREVIOUS`
 * (keys being rotated out). Each use has its own HKDF-SHA256 subkey, so a fingerprint or an
 * audit HMAC never reveals anything about the sealing key. Sealing, HMACs, fingerprints and
 * checkpoint signatures use the current key only; previous keys only open, match and verify
 * what was made under them before the rotation.
 */
export class MasterKey {
  private readonly current: DerivedKeys;
  private readonly previous: readonly DerivedKeys[];

  constructor(key: Buffer, previous: readonly Buffer[] = []) {
    this.current = new DerivedKeys(key);
    const seen = new Set([this.current.id.toString('hex')]);
    this.previous = previous
      .map((raw) => new DerivedKeys(raw))
      .filter((derived) => {
        const id = derived.id.toString('hex');
        return !seen.has(id) && seen.add(id);
      });
  }

  /** How many previous keys (other than the current one) are configured. */
  get previousCount(): number {
    return this.previous.length;
  }

  /**
   * The first bytes of every value {@link seal} makes while a rotation is configured (version and
   * current key id): a stored value that does not start with them was sealed under a previous key
   * or version, and is what the re-seal after a rotation rewrites.
   */
  currentSealPrefix(): Buffer {
    return Buffer.concat([Buffer.from([SEAL_V2]), this.current.id]);
  }

  /**
   * Seals `plaintext` with AES-256-GCM under the current key. `context` (e.g.
   * `connector:payments`) is bound as associated data, so a sealed value copied to another row
   * does not open. While a rotation is configured (`WRIT_MASTER_KEY_PREVIOUS`) the value names
   * its key (version 2, the header bound as associated data too, so another key id does not
   * open); otherwise it is written as releases before key ids wrote it (version 1), which every
   * instance of a rolling upgrade can open: readers of version 2 come first, its writers with the
   * first rotation, which every instance must be configured for anyway.
   */
  seal(plaintext: Buffer | string, context: string): Buffer {
    const header = this.previous.length > 0 ? this.currentSealPrefix() : Buffer.from([SEAL_V1]);
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.current.sealKey, iv);
    cipher.setAAD(header[0] === SEAL_V1 ? Buffer.from(context, 'utf8') : Buffer.concat([header, Buffer.from(context, 'utf8')]));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([header, iv, cipher.getAuthTag(), body]);
  }

  /**
   * Opens what {@link seal} sealed under the same context, with the configured key its header
   * names (values sealed before key ids: the current key, then the previous ones); throws
   * {@link UnsealError} otherwise.
   */
  unseal(sealed: Buffer, context: string): Buffer {
    return this.open(sealed, context).plaintext;
  }

  /**
   * For the re-seal after a rotation: `sealed` opened and sealed again under the current key
   * (with its plaintext), or `undefined` when the current key already opens it (a value sealed
   * without a key id under the current key: rewriting it would change nothing but its format,
   * and claim a re-seal that was none). Throws {@link UnsealError} as {@link unseal} does.
   */
  resealUnderCurrent(sealed: Buffer, context: string): { sealed: Buffer; plaintext: Buffer } | undefined {
    const opened = this.open(sealed, context);
    if (opened.keys === this.current) return undefined;
    return { sealed: this.seal(opened.plaintext, context), plaintext: opened.plaintext };
  }

  private open(sealed: Buffer, context: string): { plaintext: Buffer; keys: DerivedKeys } {
    const aad = Buffer.from(context, 'utf8');
    if (sealed[0] === SEAL_V1 && sealed.length >= 1 + IV_BYTES + TAG_BYTES) {
      const iv = sealed.subarray(1, 1 + IV_BYTES);
      const tag = sealed.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
      const body = sealed.subarray(1 + IV_BYTES + TAG_BYTES);
      for (const keys of [this.current, ...this.previous]) {
        try {
          return { plaintext: keys.open(iv, tag, body, aad), keys };
        } catch {
          // Not this key: try the next one.
        }
      }
      throw new UnsealError();
    }
    const headerBytes = 1 + KEY_ID_BYTES;
    if (sealed[0] !== SEAL_V2 || sealed.length < headerBytes + IV_BYTES + TAG_BYTES) throw new UnsealError();
    const header = sealed.subarray(0, headerBytes);
    const keys = [this.current, ...this.previous].find((candidate) => candidate.id.equals(header.subarray(1)));
    if (!keys) throw new UnsealError();
    try {
      const plaintext = keys.open(
        sealed.subarray(headerBytes, headerBytes + IV_BYTES),
        sealed.subarray(headerBytes + IV_BYTES, headerBytes + IV_BYTES + TAG_BYTES),
        sealed.subarray(headerBytes + IV_BYTES + TAG_BYTES),
        Buffer.concat([header, aad]),
      );
      return { plaintext, keys };
    } catch {
      throw new UnsealError();
    }
  }

  /** HMAC-SHA256 (hex) of a value for the audit log: matchable by investigators, unreadable. */
  auditHmac(value: string): string {
    return createHmac('sha256', this.current.auditKey).update(value, 'utf8').digest('hex');
  }

  /**
   * {@link auditHmac} of a value under the current key, then under each previous key: events
   * recorded before a rotation hold one of the later ones.
   */
  auditHmacs(value: string): string[] {
    return [this.current, ...this.previous].map((keys) => createHmac('sha256', keys.auditKey).update(value, 'utf8').digest('hex'));
  }

  /**
   * The integrity tag of a row that grants authority (a task, an agent, an orchestrator):
   * `v1.<key id>.<HMAC-SHA256>` under the current key's row subkey (HKDF info `writ/row-mac/v1`),
   * over `kind` (the table, so a tag never verifies for a row of another table) and the row's
   * canonical text. Whoever lacks the master key (a database administrator) cannot make one.
   */
  rowMac(kind: string, canonicalText: string): string {
    if (!ROW_KIND.test(kind)) throw new Error(`rowMac: kind must match ${ROW_KIND}`);
    return `${ROW_MAC_VERSION}.${this.current.idHex}.${this.current.rowMac(kind, canonicalText).toString('base64url')}`;
  }

  /**
   * Whether `tag` is the {@link rowMac} of `kind` and `canonicalText` under the configured key
   * its header names (the current one, or a previous one: rows tagged before a rotation verify
   * until they are tagged again). Constant time in the MAC; false for anything malformed.
   */
  verifyRowMac(kind: string, canonicalText: string, tag: string | null | undefined): boolean {
    if (typeof tag !== 'string' || !ROW_KIND.test(kind)) return false;
    const parts = tag.split('.');
    if (parts.length !== 3 || parts[0] !== ROW_MAC_VERSION) return false;
    const keys = this.current.idHex === parts[1] ? this.current : this.previous.find((candidate) => candidate.idHex === parts[1]);
    if (!keys) return false;
    const given = Buffer.from(parts[2], 'base64url');
    const expected = keys.rowMac(kind, canonicalText);
    return given.length === expected.length && timingSafeEqual(given, expected);
  }

  /** Whether a row tag was made under the current key (one made under a previous key is re-tagged after a rotation). */
  isCurrentRowMac(tag: string): boolean {
    return tag.startsWith(`${ROW_MAC_VERSION}.${this.current.idHex}.`);
  }

  /** A short keyed fingerprint of a secret, shown instead of the secret (`sha256:` + 16 hex). */
  fingerprint(secret: string | Buffer): string {
    return `hmac-sha256:${createHmac('sha256', this.current.fingerprintKey).update(secret).digest('hex').slice(0, 16)}`;
  }

  /**
   * The Ed25519 key that signs audit checkpoints: its seed is an HKDF-SHA256 subkey of the
   * current master key (info `writ/audit-checkpoint/ed25519/v1`), so it is the same on every
   * instance and after every restart, and exists only where the master key does.
   */
  checkpointSigningKey(): CheckpointSigningKey {
    return new CheckpointSigningKey(this.current.checkpointSeed);
  }

  /**
   * The public keys that verify checkpoints: the current key's, then those of the previous
   * keys (checkpoints signed before the rotation), then `configured` ones not already there
   * (`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS`: keys of master keys dropped since). Only the current
   * key signs.
   */
  checkpointPublicKeys(configured: readonly Readonly<CheckpointVerificationJwk>[] = []): CheckpointVerificationJwk[] {
    const keys = [this.current, ...this.previous].map((keys) => new CheckpointSigningKey(keys.checkpointSeed).publicJwk);
    const known = new Set(keys.map((key) => key.kid));
    for (const key of configured) {
      if (known.has(key.kid)) continue;
      known.add(key.kid);
      keys.push({ kty: key.kty, crv: key.crv, x: key.x, kid: key.kid, alg: key.alg, use: key.use });
    }
    return keys;
  }

  /** Constant-time comparison of two fingerprints or hashes. */
  static sameDigest(a: string, b: string): boolean {
    const left = Buffer.from(a);
    const right = Buffer.from(b);
    return left.length === right.length && timingSafeEqual(left, right);
  }
}

/** How the master key was obtained, for the start-up log. */
export type MasterKeySource = 'environment' | 'data-dir' | 'generated';

/**
 * The master key from `WRIT_MASTER_KEY`, or (embedded database only) the one kept in
 * `dataDir/master-key`, generated with mode 0600 on first start (a file or data directory another
 * user could read or write is refused: {@link readPrivateFile}); `previous` are the keys of
 * `WRIT_MASTER_KEY_PREVIOUS`.
 */
export async function resolveMasterKey(
  configured: Buffer | undefined,
  dataDir: string,
  embedded: boolean,
  previous: readonly Buffer[] = [],
): Promise<{ key: MasterKey; source: MasterKeySource }> {
  if (configured) return { key: new MasterKey(configured, previous), source: 'environment' };
  if (!embedded) throw new Error('WRIT_MASTER_KEY is required with an external database');
  const file = join(dataDir, 'master-key');
  if (existsSync(file)) {
    // Refused when another user could read it, or could have written it (a key of theirs).
    const raw = Buffer.from((await readPrivateFile(file)).trim(), 'base64');
    if (raw.length !== 32) throw new Error(`${file} does not hold a base64 32-byte key`);
    return { key: new MasterKey(raw, previous), source: 'data-dir' };
  }
  await ensurePrivateDirectory(dataDir);
  const raw = randomBytes(32);
  await writeFile(file, raw.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  return { key: new MasterKey(raw, previous), source: 'generated' };
}
