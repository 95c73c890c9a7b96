/** A JWKS of public keys as stored for a client. */
export interface JsonWebKeySet {
  keys: Array<Record<string, unknown> & { kid: string; kty: string }>;
}
