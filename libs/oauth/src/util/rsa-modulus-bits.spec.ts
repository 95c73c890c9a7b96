import { generateKeyPairSync } from 'node:crypto';
import { rsaModulusBits } from './rsa-modulus-bits';

describe('rsaModulusBits', () => {
  it.each([1024, 2048, 3072])('measures a %d-bit modulus', (bits) => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
    expect(rsaModulusBits(publicKey.export({ format: 'jwk' }).n)).toBe(bits);
  });

  it('ignores leading zero octets', () => {
    expect(rsaModulusBits(Buffer.from([0, 0, 0x80, 0]).toString('base64url'))).toBe(16);
    expect(rsaModulusBits(Buffer.from([0, 0]).toString('base64url'))).toBe(0);
  });

  it('refuses what is not base64url', () => {
    expect(rsaModulusBits('a+b/')).toBeUndefined();
    expect(rsaModulusBits('')).toBeUndefined();
    expect(rsaModulusBits(42)).toBeUndefined();
  });
});
