import { createCipheriv, createDecipheriv, createPublicKey, hkdfSync, randomBytes, verify } from 'node:crypto';
import { MasterKey, UnsealError } from './master-key';

describe('MasterKey', () => {
  const key = new MasterKey(randomBytes(32));

  it('seals and opens under the same context', () => {
    const sealed = key.seal('sk_live_secret', 'connector:payments');
    expect(sealed.includes(Buffer.from('sk_live_secret'))).toBe(false);
    expect(key.unseal(sealed, 'connector:payments').toString()).toBe('sk_live_secret');
  });

  it('refuses a sealed value moved to another context', () => {
    const sealed = key.seal('secret', 'connector:payments');
    expect(() => key.unseal(sealed, 'connector:chat')).toThrow(UnsealError);
  });

  it('refuses a tampered ciphertext', () => {
    const sealed = key.seal('secret', 'c');
    sealed[sealed.length - 1] ^= 1;
    expect(() => key.unseal(sealed, 'c')).toThrow(UnsealError);
  });

  it('refuses to open with another master key', () => {
    const sealed = key.seal('secret', 'c');
    expect(() => new MasterKey(randomBytes(32)).unseal(sealed, 'c')).toThrow(UnsealError);
  });

  it('derives independent, stable keyed digests', () => {
    expect(key.auditHmac('acct_1')).toBe(key.auditHmac('acct_1'));
    expect(key.auditHmac('acct_1')).not.toBe(new MasterKey(randomBytes(32)).auditHmac('acct_1'));
    expect(key.fingerprint('acct_1')).toMatch(/^hmac-sha256:[0-9a-f]{16}$/);
    expect(key.fingerprint('acct_1').slice(12)).not.toBe(key.auditHmac('acct_1').slice(0, 16));
  });

  it('derives one stable Ed25519 checkpoint key per master key, published as a JWK', () => {
    const signer = key.checkpointSigningKey();
    expect(key.checkpointSigningKey().kid).toBe(signer.kid);
    expect(new MasterKey(randomBytes(32)).checkpointSigningKey().kid).not.toBe(signer.kid);
    expect(signer.publicJwk).toEqual({
      kty: 'OKP',
      crv: 'Ed25519',
      x: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
      kid: signer.kid,
      alg: 'EdDSA',
      use: 'sig',
    });
    expect(JSON.stringify(signer.publicJwk)).not.toMatch(/"d"/);
    const data = Buffer.from('checkpoint');
    const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: signer.publicJwk.x }, format: 'jwk' });
    expect(verify(null, data, publicKey, signer.sign(data))).toBe(true);
    expect(verify(null, Buffer.from('other'), publicKey, signer.sign(data))).toBe(false);
  });
});

/** A value as the code before key ids sealed it (version 1: no key id, the context alone as AAD). */
function sealV1(raw: Buffer, plaintext: string, context: string): Buffer {
  const sealKey = Buffer.from(hkdfSync('sha256', raw, Buffer.alloc(0), 'writ/seal/v1', 32));
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealKey, iv);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([1]), iv, cipher.getAuthTag(), body]);
}

/** What releases before key ids opened: version 1 only, the context alone as AAD. */
function openAsVersion1(raw: Buffer, sealed: Buffer, context: string): Buffer {
  if (sealed[0] !== 1) throw new Error('not version 1');
  const decipher = createDecipheriv('aes-256-gcm', Buffer.from(hkdfSync('sha256', raw, Buffer.alloc(0), 'writ/seal/v1', 32)), sealed.subarray(1, 13));
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(sealed.subarray(13, 29));
  return Buffer.concat([decipher.update(sealed.subarray(29)), decipher.final()]);
}

describe('MasterKey rotation', () => {
  const rawA = randomBytes(32);
  const rawB = randomBytes(32);
  const rawC = randomBytes(32);
  const a = new MasterKey(rawA);
  /** A under rotation (C previous): seals version 2 values naming A. */
  const aRotating = new MasterKey(rawA, [rawC]);
  const rotated = new MasterKey(rawB, [rawA]);

  it('names the sealing key in the header, by an id that is not the key', () => {
    const sealed = rotated.seal('secret', 'c');
    expect(sealed[0]).toBe(2);
    expect(sealed.subarray(0, 9)).toEqual(rotated.currentSealPrefix());
    expect(sealed.subarray(0, 9)).toEqual(new MasterKey(rawB).currentSealPrefix());
    expect(sealed.subarray(0, 9)).not.toEqual(a.currentSealPrefix());
    expect(sealed.includes(rawB.subarray(0, 8))).toBe(false);
  });

  it('opens values sealed under a previous key by their key id, and seals under the current one only', () => {
    const underA = aRotating.seal('secret', 'c');
    expect(underA[0]).toBe(2);
    expect(rotated.unseal(underA, 'c').toString()).toBe('secret');
    expect(rotated.unseal(a.seal('secret', 'c'), 'c').toString()).toBe('secret');
    const underB = rotated.seal('secret', 'c');
    expect(() => a.unseal(underB, 'c')).toThrow(UnsealError);
    expect(new MasterKey(rawB).unseal(underB, 'c').toString()).toBe('secret');
    // Previous keys in any order, with the current one repeated among them.
    expect(new MasterKey(rawB, [rawC, rawB, rawA]).unseal(underA, 'c').toString()).toBe('secret');
  });

  it('opens version 1 values (no key id) under the current key, then the previous ones', () => {
    const v1A = sealV1(rawA, 'old secret', 'c');
    expect(a.unseal(v1A, 'c').toString()).toBe('old secret');
    expect(rotated.unseal(v1A, 'c').toString()).toBe('old secret');
    expect(new MasterKey(rawB, [rawC, rawA]).unseal(v1A, 'c').toString()).toBe('old secret');
    expect(() => new MasterKey(rawB).unseal(v1A, 'c')).toThrow(UnsealError);
    expect(() => rotated.unseal(v1A, 'other')).toThrow(UnsealError);
    const v1B = sealV1(rawB, 'new secret', 'c');
    expect(rotated.unseal(v1B, 'c').toString()).toBe('new secret');
  });

  it('re-seals under the current key what a previous key opens, and leaves what the current key opens', () => {
    const v1A = sealV1(rawA, 'old secret', 'c');
    const resealed = rotated.resealUnderCurrent(v1A, 'c');
    expect(resealed?.plaintext.toString()).toBe('old secret');
    expect(resealed?.sealed.subarray(0, 9)).toEqual(rotated.currentSealPrefix());
    expect(new MasterKey(rawB).unseal(resealed!.sealed, 'c').toString()).toBe('old secret');
    expect(rotated.resealUnderCurrent(aRotating.seal('secret', 'c'), 'c')?.plaintext.toString()).toBe('secret');
    // Sealed under the current key (in either version): nothing to do.
    expect(rotated.resealUnderCurrent(sealV1(rawB, 'new secret', 'c'), 'c')).toBeUndefined();
    expect(rotated.resealUnderCurrent(rotated.seal('new secret', 'c'), 'c')).toBeUndefined();
    expect(new MasterKey(rawA, [rawB]).resealUnderCurrent(v1A, 'c')).toBeUndefined();
    expect(() => rotated.resealUnderCurrent(v1A, 'other')).toThrow(UnsealError);
    expect(() => rotated.resealUnderCurrent(new MasterKey(rawC).seal('x', 'c'), 'c')).toThrow(UnsealError);
  });

  it('refuses a value whose key id names no configured key', () => {
    expect(() => new MasterKey(rawC).unseal(aRotating.seal('secret', 'c'), 'c')).toThrow(UnsealError);
  });

  it('refuses a tampered header: another key id, version or truncation', () => {
    const sealed = aRotating.seal('secret', 'c');
    // The id of another configured key: that key is tried and fails, the header is authenticated.
    const retargeted = Buffer.concat([new MasterKey(rawB).currentSealPrefix(), sealed.subarray(9)]);
    expect(() => rotated.unseal(retargeted, 'c')).toThrow(UnsealError);
    const flipped = Buffer.from(sealed);
    flipped[3] ^= 1;
    expect(() => rotated.unseal(flipped, 'c')).toThrow(UnsealError);
    // Stripped to version 1 (no id): the header was authenticated, so no key opens it.
    const downgraded = Buffer.concat([Buffer.from([1]), sealed.subarray(9)]);
    expect(() => rotated.unseal(downgraded, 'c')).toThrow(UnsealError);
    const unknownVersion = Buffer.from(sealed);
    unknownVersion[0] = 3;
    expect(() => rotated.unseal(unknownVersion, 'c')).toThrow(UnsealError);
    expect(() => rotated.unseal(sealed.subarray(0, 20), 'c')).toThrow(UnsealError);
    expect(() => rotated.unseal(Buffer.alloc(0), 'c')).toThrow(UnsealError);
  });

  it('outside a rotation, seals as releases before key ids did, which they open (a rolling upgrade)', () => {
    for (const sealed of [a.seal('secret', 'c'), new MasterKey(rawA, [rawA]).seal('secret', 'c')]) {
      expect(sealed[0]).toBe(1);
      expect(openAsVersion1(rawA, sealed, 'c').toString()).toBe('secret');
      expect(() => openAsVersion1(rawA, sealed, 'other')).toThrow();
    }
    expect(() => openAsVersion1(rawA, aRotating.seal('secret', 'c'), 'c')).toThrow();
  });

  it('makes HMACs, fingerprints and checkpoint signatures with the current key; matches and verifies with all', () => {
    expect(rotated.auditHmac('v')).toBe(new MasterKey(rawB).auditHmac('v'));
    expect(rotated.auditHmacs('v')).toEqual([new MasterKey(rawB).auditHmac('v'), a.auditHmac('v')]);
    expect(rotated.fingerprint('v')).toBe(new MasterKey(rawB).fingerprint('v'));
    expect(rotated.checkpointSigningKey().kid).toBe(new MasterKey(rawB).checkpointSigningKey().kid);
    expect(rotated.checkpointPublicKeys()).toEqual([new MasterKey(rawB).checkpointSigningKey().publicJwk, a.checkpointSigningKey().publicJwk]);
    expect(rotated.previousCount).toBe(1);
    expect(new MasterKey(rawB, [rawB]).previousCount).toBe(0);
  });

  it('trusts configured checkpoint public keys after its own, once each, and never signs with them', () => {
    const [ownB, ownA, dropped] = [new MasterKey(rawB), a, new MasterKey(rawC)].map((key) => key.checkpointSigningKey().publicJwk);
    // A configured key equal to one of its own (or listed twice) appears once, in its first place.
    expect(rotated.checkpointPublicKeys([dropped, ownA, { ...dropped }])).toEqual([ownB, ownA, dropped]);
    expect(rotated.checkpointPublicKeys([dropped])[2]).not.toBe(dropped);
    expect(rotated.checkpointPublicKeys([])).toEqual([ownB, ownA]);
    expect(rotated.checkpointSigningKey().publicJwk).toEqual(ownB);
  });
});

describe('MasterKey row MACs', () => {
  const rawA = Buffer.alloc(32, 1);
  const rawB = Buffer.alloc(32, 2);
  const a = new MasterKey(rawA);
  const rotated = new MasterKey(rawB, [rawA]);

  it('verifies a tag for its kind and text only, and under no other key', () => {
    const tag = a.rowMac('tasks', '["t1"]');
    expect(tag).toMatch(/^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$/);
    expect(a.verifyRowMac('tasks', '["t1"]', tag)).toBe(true);
    expect(a.verifyRowMac('agents', '["t1"]', tag)).toBe(false);
    expect(a.verifyRowMac('tasks', '["t2"]', tag)).toBe(false);
    expect(new MasterKey(rawB).verifyRowMac('tasks', '["t1"]', tag)).toBe(false);
    // Its own subkey: not the audit HMAC of the same input.
    expect(tag.split('.')[2]).not.toBe(Buffer.from(a.auditHmac('tasks\n["t1"]'), 'hex').toString('base64url'));
  });

  it('refuses malformed, truncated or absent tags, and kinds that could hide a separator', () => {
    const tag = a.rowMac('agents', 'x');
    for (const bad of [null, undefined, '', 'v1', tag.slice(0, -1), `v2${tag.slice(2)}`, `${tag}.x`, tag.replace(/\.[^.]+$/, '.')]) {
      expect(a.verifyRowMac('agents', 'x', bad)).toBe(false);
    }
    expect(() => a.rowMac('agents\nx', 'y')).toThrow();
    expect(a.verifyRowMac('agents\nx', 'y', tag)).toBe(false);
  });

  it('makes tags under the current key; verifies those made under a previous one', () => {
    const old = a.rowMac('orchestrators', 'o');
    expect(rotated.verifyRowMac('orchestrators', 'o', old)).toBe(true);
    expect(rotated.isCurrentRowMac(old)).toBe(false);
    const fresh = rotated.rowMac('orchestrators', 'o');
    expect(rotated.isCurrentRowMac(fresh)).toBe(true);
    expect(fresh).toBe(new MasterKey(rawB).rowMac('orchestrators', 'o'));
    // Once the previous key is dropped, its tags no longer verify.
    expect(new MasterKey(rawB).verifyRowMac('orchestrators', 'o', old)).toBe(false);
  });
});
