import type { MasterKey } from '@writ/keys';

/** A static bearer token sent as `Authorization: Bearer <token>`. */
export interface BearerCredential {
  type: 'bearer';
  token: string;
}

/** A static secret sent in a named header (e.g. `X-Api-Key`). */
export interface HeaderCredential {
  type: 'header';
  name: string;
  value: string;
}

/** OAuth 2.0 client credentials: the gateway fetches, caches and refreshes the upstream token. */
export interface OAuth2ClientCredentials {
  type: 'oauth2_client_credentials';
  token_url: string;
  client_id: string;
  client_secret: string;
  scope?: string;
}

/** The write-only upstream credential of a connector, as sealed at rest. */
export type UpstreamCredential = BearerCredential | HeaderCredential | OAuth2ClientCredentials;

/** The credential types a connector may hold. */
export const CREDENTIAL_TYPES = ['bearer', 'header', 'oauth2_client_credentials'] as const;

/** The associated data a connector's credential is sealed under: a sealed value copied to another connector does not open. */
export function credentialSealContext(connectorId: string): string {
  return `connector:${connectorId}`;
}

/** Seals a credential for the `connectors` row of `connectorId`, with its keyed fingerprint and type. */
export function sealCredential(
  master: MasterKey,
  connectorId: string,
  credential: UpstreamCredential,
): { sealed: Buffer; fingerprint: string; type: UpstreamCredential['type'] } {
  const plaintext = JSON.stringify(credential);
  return {
    sealed: master.seal(plaintext, credentialSealContext(connectorId)),
    fingerprint: master.fingerprint(plaintext),
    type: credential.type,
  };
}

/** Opens a connector's sealed credential (throws `UnsealError` for a wrong key, row or tampering). */
export function unsealCredential(master: MasterKey, connectorId: string, sealed: Buffer): UpstreamCredential {
  return JSON.parse(master.unseal(sealed, credentialSealContext(connectorId)).toString('utf8')) as UpstreamCredential;
}

/** Every secret string a credential holds (for log and response scrubbing in tests and redaction). */
export function credentialSecrets(credential: UpstreamCredential): string[] {
  switch (credential.type) {
    case 'bearer':
      return [credential.token];
    case 'header':
      return [credential.value];
    case 'oauth2_client_credentials':
      return [credential.client_secret];
  }
}
