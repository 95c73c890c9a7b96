import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';

/** A client's key pair: the private key to sign assertions, the public JWK to register. */
export interface ClientKey {
  privateKey: CryptoKey;
  publicJwk: JWK & { kid: string; alg: string; use: string };
  alg: string;
}

/** Generates a key pair for an agent or orchestrator (ES256 unless told). */
export async function createClientKey(alg = 'ES256'): Promise<ClientKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  return { privateKey, publicJwk: { ...jwk, kid, alg, use: 'sig' }, alg };
}

/** The JWKS to register for a set of keys. */
export function jwksOf(...keys: ClientKey[]): { keys: ClientKey['publicJwk'][] } {
  return { keys: keys.map((key) => key.publicJwk) };
}

/** Options to bend a client assertion for attack tests. */
export interface AssertionOverrides {
  claims?: JWTPayload & Record<string, unknown>;
  /** Claim names to leave out (e.g. `jti`, `exp`). */
  omit?: string[];
  header?: Record<string, unknown>;
}

/**
 * A `private_key_jwt` client assertion (RFC 7523): `iss` = `sub` = client id, `aud` = the
 * issuer identifier, 60 s lifetime, a fresh `jti`.
 */
export async function clientAssertion(clientId: string, key: ClientKey, issuer: string, overrides: AssertionOverrides = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { iss: clientId, sub: clientId, aud: issuer, iat: now, exp: now + 60, jti: randomUUID(), ...overrides.claims };
  for (const name of overrides.omit ?? []) delete claims[name];
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: key.publicJwk.kid, typ: 'JWT', ...overrides.header }).sign(key.privateKey);
}

/** The form fields of `private_key_jwt` client authentication. */
export async function clientAuthFields(clientId: string, key: ClientKey, issuer: string, overrides?: AssertionOverrides): Promise<Record<string, string>> {
  return {
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    client_assertion: await clientAssertion(clientId, key, issuer, overrides),
  };
}
