import { randomBytes } from 'node:crypto';
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
});
