import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CheckpointSigningKey } from './checkpoint-signing-key';

const SEAL_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Thrown when sealed data cannot be opened: wrong master key, wrong context, or tampering. */
export class UnsealError extends Error {
  constructor() {
    super('sealed value could not be opened (wrong master key, context or tampered data)');
    this.name = 'UnsealError';
  }
}

/**
 * Everything derived from `WRIT_MASTER_KEY`. Each use has its own HKDF-SHA256 subkey, so a
 * fingerprint or an audit HMAC never reveals anything about the sealing key.
 */
export class MasterKey {
  private readonly sealKey: Buffer;
  private readonly auditKey: Buffer;
  private readonly fingerprintKey: Buffer;
  private readonly checkpointSeed: Buffer;

  constructor(key: Buffer) {
    if (key.length !== 32) throw new Error('the master key must be 32 bytes');
    const derive = (info: string) => Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), info, 32));
    this.sealKey = derive('writ/seal/v1');
    this.auditKey = derive('writ/audit-hmac/v1');
    this.fingerprintKey = derive('writ/fingerprint/v1');
    this.checkpointSeed = derive('writ/audit-checkpoint/ed25519/v1');
  }

  /**
   * Seals `plaintext` with AES-256-GCM. `context` (e.g. `connector:payments`) is bound as
   * associated data, so a sealed value copied to another row does not open.
   */
  seal(plaintext: Buffer | string, context: string): Buffer {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.sealKey, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([Buffer.from([SEAL_VERSION]), iv, cipher.getAuthTag(), body]);
  }

  /** Opens what {@link seal} sealed under the same context; throws {@link UnsealError} otherwise. */
  unseal(sealed: Buffer, context: string): Buffer {
    if (sealed.length < 1 + IV_BYTES + TAG_BYTES || sealed[0] !== SEAL_VERSION) throw new UnsealError();
    const iv = sealed.subarray(1, 1 + IV_BYTES);
    const tag = sealed.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.sealKey, iv);
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(sealed.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]);
    } catch {
      throw new UnsealError();
    }
  }

  /** HMAC-SHA256 (hex) of a value for the audit log: matchable by investigators, unreadable. */
  auditHmac(value: string): string {
    return createHmac('sha256', this.auditKey).update(value, 'utf8').digest('hex');
  }

  /** A short keyed fingerprint of a secret, shown instead of the secret (`sha256:` + 16 hex). */
  fingerprint(secret: string | Buffer): string {
    return `hmac-sha256:${createHmac('sha256', this.fingerprintKey).update(secret).digest('hex').slice(0, 16)}`;
  }

  /**
   * The Ed25519 key that signs audit checkpoints: its seed is an HKDF-SHA256 subkey of the
   * master key (info `writ/audit-checkpoint/ed25519/v1`), so it is the same on every instance
   * and after every restart, and exists only where the master key does.
   */
  checkpointSigningKey(): CheckpointSigningKey {
    return new CheckpointSigningKey(this.checkpointSeed);
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
 * `dataDir/master-key`, generated with mode 0600 on first start.
 */
export async function resolveMasterKey(
  configured: Buffer | undefined,
  dataDir: string,
  embedded: boolean,
): Promise<{ key: MasterKey; source: MasterKeySource }> {
  if (configured) return { key: new MasterKey(configured), source: 'environment' };
  if (!embedded) throw new Error('WRIT_MASTER_KEY is required with an external database');
  const file = join(dataDir, 'master-key');
  if (existsSync(file)) {
    const raw = Buffer.from((await readFile(file, 'utf8')).trim(), 'base64');
    if (raw.length !== 32) throw new Error(`${file} does not hold a base64 32-byte key`);
    return { key: new MasterKey(raw), source: 'data-dir' };
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const raw = randomBytes(32);
  await writeFile(file, raw.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  return { key: new MasterKey(raw), source: 'generated' };
}
