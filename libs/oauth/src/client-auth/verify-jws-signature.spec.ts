import { generateKeyPairSync, sign as cryptoSign, constants, webcrypto } from 'node:crypto';
import type { CryptoKey } from 'jose';
import { verifyJwsSignature as verify } from './verify-jws-signature';

const INPUT = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0';

type PublicKey = ReturnType<typeof generateKeyPairSync>['publicKey'];

async function cryptoKeyOf(publicKey: PublicKey, algorithm: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams): Promise<CryptoKey> {
  return await webcrypto.subtle.importKey('jwk', publicKey.export({ format: 'jwk' }), algorithm, true, ['verify']);
}

describe.each([
  ['on the thread pool', true],
  ['on the main thread', false],
])('verifyJwsSignature %s', (_where, onThreadPool) => {
  const verifyJwsSignature = (...args: Parameters<typeof verify>) => verify(args[0], args[1], args[2], args[3], onThreadPool);
  const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const es256Key = () => cryptoKeyOf(p256.publicKey, { name: 'ECDSA', namedCurve: 'P-256' });
  const es256Signature = cryptoSign('sha256', Buffer.from(INPUT), { key: p256.privateKey, dsaEncoding: 'ieee-p1363' });

  it('accepts a genuine ES256 signature and refuses one over other bytes', async () => {
    await expect(verifyJwsSignature('ES256', await es256Key(), INPUT, es256Signature)).resolves.toBe(true);
    await expect(verifyJwsSignature('ES256', await es256Key(), `${INPUT}x`, es256Signature)).resolves.toBe(false);
  });

  it('refuses a DER-encoded or truncated ECDSA signature (only the raw r||s form is JWS)', async () => {
    const der = cryptoSign('sha256', Buffer.from(INPUT), p256.privateKey);
    await expect(verifyJwsSignature('ES256', await es256Key(), INPUT, der)).resolves.toBe(false);
    await expect(verifyJwsSignature('ES256', await es256Key(), INPUT, es256Signature.subarray(0, 63))).resolves.toBe(false);
  });

  it('refuses ES256 with a key of another curve, even over a valid signature of that key', async () => {
    const key = await cryptoKeyOf(p384.publicKey, { name: 'ECDSA', namedCurve: 'P-384' });
    const signature = cryptoSign('sha256', Buffer.from(INPUT), { key: p384.privateKey, dsaEncoding: 'ieee-p1363' });
    await expect(verifyJwsSignature('ES256', key, INPUT, signature)).resolves.toBe(false);
  });

  it('refuses an RSA key for an ECDSA alg and PKCS#1 v1.5 signatures for PS256', async () => {
    const rsKey = await cryptoKeyOf(rsa.publicKey, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' });
    const pkcs1 = cryptoSign('sha256', Buffer.from(INPUT), { key: rsa.privateKey, padding: constants.RSA_PKCS1_PADDING });
    await expect(verifyJwsSignature('RS256', rsKey, INPUT, pkcs1)).resolves.toBe(true);
    await expect(verifyJwsSignature('ES256', rsKey, INPUT, pkcs1)).resolves.toBe(false);
    const psKey = await cryptoKeyOf(rsa.publicKey, { name: 'RSA-PSS', hash: 'SHA-256' });
    await expect(verifyJwsSignature('PS256', psKey, INPUT, pkcs1)).resolves.toBe(false);
    const pss = cryptoSign('sha256', Buffer.from(INPUT), { key: rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    await expect(verifyJwsSignature('PS256', psKey, INPUT, pss)).resolves.toBe(true);
  });

  it('takes Ed25519 (RFC 9864) only from an Ed25519 key, where EdDSA also takes Ed448', async () => {
    const importOkp = (publicKey: PublicKey, name: string) =>
      webcrypto.subtle.importKey('jwk', publicKey.export({ format: 'jwk' }), { name }, true, ['verify']);
    const ed25519 = generateKeyPairSync('ed25519');
    const ed448 = generateKeyPairSync('ed448');
    const ed25519Key = await importOkp(ed25519.publicKey, 'Ed25519');
    const ed448Key = await importOkp(ed448.publicKey, 'Ed448');
    const by25519 = cryptoSign(null, Buffer.from(INPUT), ed25519.privateKey);
    const by448 = cryptoSign(null, Buffer.from(INPUT), ed448.privateKey);
    await expect(verifyJwsSignature('Ed25519', ed25519Key, INPUT, by25519)).resolves.toBe(true);
    await expect(verifyJwsSignature('EdDSA', ed448Key, INPUT, by448)).resolves.toBe(true);
    await expect(verifyJwsSignature('Ed25519', ed448Key, INPUT, by448)).resolves.toBe(false);
  });

  it('refuses a private key', async () => {
    const key = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as unknown as { privateKey: CryptoKey };
    await expect(verifyJwsSignature('ES256', key.privateKey, INPUT, es256Signature)).resolves.toBe(false);
  });

  it(onThreadPool ? 'answers after a turn of the event loop (libuv ran it)' : 'has answered before any I/O (it ran synchronously)', async () => {
    let settled = false;
    const verified = verifyJwsSignature('ES256', await es256Key(), INPUT, es256Signature).then((valid) => (settled = valid));
    for (let turn = 0; turn < 5; turn += 1) await Promise.resolve();
    expect(settled).toBe(!onThreadPool);
    await verified;
    expect(settled).toBe(true);
  });
});
