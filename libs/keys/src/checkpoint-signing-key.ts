import { createHash, createPrivateKey, createPublicKey, KeyObject, sign } from 'node:crypto';

/** PKCS #8 DER prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** An Ed25519 public JWK that verifies audit checkpoints. */
export interface CheckpointVerificationJwk {
  kty: 'OKP';
  crv: 'Ed25519';
  x: string;
  kid: string;
  alg: 'EdDSA';
  use: 'sig';
}

/**
 * The Ed25519 key that signs audit checkpoints, made from a 32-byte seed derived from the
 * master key (HKDF, see {@link MasterKey.checkpointSigningKey}). It is recomputed at every
 * start and never written anywhere: a database superuser cannot sign checkpoints.
 */
export class CheckpointSigningKey {
  /** RFC 7638 thumbprint of the public JWK. */
  readonly kid: string;
  /** The public key to publish and to verify with. */
  readonly publicJwk: CheckpointVerificationJwk;
  private readonly privateKey: KeyObject;

  constructor(seed: Buffer) {
    if (seed.length !== 32) throw new Error('an Ed25519 seed is 32 bytes');
    this.privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
    const x = (createPublicKey(this.privateKey).export({ format: 'jwk' }) as { x: string }).x;
    this.kid = createHash('sha256')
      .update(JSON.stringify({ crv: 'Ed25519', kty: 'OKP', x }), 'utf8')
      .digest('base64url');
    this.publicJwk = { kty: 'OKP', crv: 'Ed25519', x, kid: this.kid, alg: 'EdDSA', use: 'sig' };
  }

  /** Ed25519 signature of `data`. */
  sign(data: Buffer): Buffer {
    return sign(null, data, this.privateKey);
  }
}
