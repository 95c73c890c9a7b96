import { createPublicKey, randomBytes, verify } from 'node:crypto';
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
