/**
 * Bit length of an RSA modulus given as the base64url `n` member of a JWK, or `undefined`
 * when `n` is not base64url. Leading zero octets do not count.
 */
export function rsaModulusBits(n: unknown): number | undefined {
  if (typeof n !== 'string' || n === '' || !/^[A-Za-z0-9_-]+$/.test(n)) return undefined;
  const bytes = Buffer.from(n, 'base64url');
  let start = 0;
  while (start < bytes.length && bytes[start] === 0) start += 1;
  if (start === bytes.length) return 0;
  return (bytes.length - start - 1) * 8 + (32 - Math.clz32(bytes[start]));
}
