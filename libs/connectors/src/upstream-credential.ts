import type { Pool } from 'pg';
import { type MasterKey, type RewrapControl, type RewrapCount, rewrapInBatches, UNCONTROLLED, UnsealError } from '@writ/keys';

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

/** A private JWK Writ signs client assertions with (RFC 7523), for providers that want `private_key_jwt`. */
export interface PrivateKeyJwtAuth {
  /** The private key (EC P-256/P-384, RSA, or OKP Ed25519), with `d`; its public half is registered at the provider. */
  jwk: { kty: string; d: string; kid?: string; alg?: string; [member: string]: unknown };
}

/**
 * OAuth 2.0 authorization code (per-user connected accounts): each user connects through a
 * connect link; the gateway injects that user's access token. The client authenticates to
 * the token and revocation endpoints with `client_secret` (HTTP Basic) or, exactly one of
 * the two, `private_key_jwt` (a signed client assertion, RFC 7523).
 */
export interface OAuth2AuthorizationCode {
  type: 'oauth2_authorization_code';
  authorization_url: string;
  token_url: string;
  client_id: string;
  client_secret?: string;
  private_key_jwt?: PrivateKeyJwtAuth;
  scopes: string[];
  /** RFC 7009 endpoint called on disconnect. */
  revocation_url?: string;
  /** The provider's issuer identifier: when set, the RFC 9207 `iss` of the authorization response must equal it. */
  issuer?: string;
}

/** The write-only upstream credential of a connector, as sealed at rest. */
export type UpstreamCredential = BearerCredential | HeaderCredential | OAuth2ClientCredentials | OAuth2AuthorizationCode;

/** The credential types a connector may hold. */
export const CREDENTIAL_TYPES = ['bearer', 'header', 'oauth2_client_credentials', 'oauth2_authorization_code'] as const;

/** The origin (`scheme://host:port`) a connector's credential is bound to: where its `base_url` points. */
export function destinationOrigin(baseUrl: string): string {
  return new URL(baseUrl).origin;
}

/**
 * The associated data a connector's credential is sealed under: the connector id and the
 * origin of its `base_url`. A sealed value copied to another connector row, or left in place
 * while `base_url` is edited to another host in SQL, does not open: the gateway refuses the
 * call and sends nothing. (The `token_url` of `oauth2_client_credentials` is inside the
 * sealed value, so it cannot be changed without the master key either.)
 */
export function credentialSealContext(connectorId: string, baseUrl: string): string {
  return `writ/connector-credential/v2\nconnector:${connectorId}\norigin:${destinationOrigin(baseUrl)}`;
}

/** The context of credentials sealed before they were bound to their destination (bound to the connector id only). */
export function legacyCredentialSealContext(connectorId: string): string {
  return `connector:${connectorId}`;
}

/** Seals a credential for the `connectors` row of `connectorId` pointing at `baseUrl`, with its keyed fingerprint and type. */
export function sealCredential(
  master: MasterKey,
  connectorId: string,
  baseUrl: string,
  credential: UpstreamCredential,
): { sealed: Buffer; fingerprint: string; type: UpstreamCredential['type'] } {
  const plaintext = JSON.stringify(credential);
  return {
    sealed: master.seal(plaintext, credentialSealContext(connectorId, baseUrl)),
    fingerprint: master.fingerprint(plaintext),
    type: credential.type,
  };
}

/**
 * Opens a connector's sealed credential for the destination it is about to be sent to
 * (throws `UnsealError` for a wrong key, another row, another origin, or tampering).
 */
export function unsealCredential(master: MasterKey, connectorId: string, baseUrl: string, sealed: Buffer): UpstreamCredential {
  let context: string;
  try {
    context = credentialSealContext(connectorId, baseUrl);
  } catch {
    throw new UnsealError();
  }
  return JSON.parse(master.unseal(sealed, context).toString('utf8')) as UpstreamCredential;
}

/**
 * Opens a credential sealed before destination binding (context: the connector id only), to
 * re-seal it bound to its destination. Never used to send a credential anywhere.
 */
export function unsealLegacyCredential(master: MasterKey, connectorId: string, sealed: Buffer): UpstreamCredential {
  return JSON.parse(master.unseal(sealed, legacyCredentialSealContext(connectorId)).toString('utf8')) as UpstreamCredential;
}

/**
 * Re-seals under the current master key every connector credential sealed under a previous
 * one, in the binding it had (a legacy one stays legacy: the gateway binds it at start), and
 * recomputes its keyed fingerprint; one conditional UPDATE per row, applied only while the row
 * still holds the value read (a credential set meanwhile is left as set).
 */
export async function rewrapConnectorCredentials(db: Pick<Pool, 'query'>, master: MasterKey, control: RewrapControl = UNCONTROLLED): Promise<RewrapCount> {
  return rewrapInBatches<{ id: string; base_url: string; credential_sealed: Buffer }>(
    db,
    master.currentSealPrefix(),
    { table: 'connectors', key: 'id', column: 'credential_sealed', columns: ['base_url'], where: 'credential_sealed IS NOT NULL' },
    async (row) => {
      const contexts = [() => credentialSealContext(row.id, row.base_url), () => legacyCredentialSealContext(row.id)];
      for (const context of contexts) {
        let resealed: { sealed: Buffer; plaintext: Buffer } | undefined;
        try {
          resealed = master.resealUnderCurrent(row.credential_sealed, context());
        } catch {
          continue;
        }
        if (!resealed) return 'current';
        const updated = await db.query('UPDATE connectors SET credential_sealed = $3, credential_fingerprint = $4 WHERE id = $1 AND credential_sealed = $2', [
          row.id,
          row.credential_sealed,
          resealed.sealed,
          master.fingerprint(resealed.plaintext.toString('utf8')),
        ]);
        return updated.rowCount === 1 ? 'rewrapped' : 'skipped';
      }
      throw new UnsealError();
    },
    control,
  );
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
    case 'oauth2_authorization_code': {
      const jwk = credential.private_key_jwt?.jwk;
      const privateMembers = jwk
        ? ['d', 'p', 'q', 'dp', 'dq', 'qi'].map((name) => jwk[name]).filter((value): value is string => typeof value === 'string')
        : [];
      return [...(credential.client_secret ? [credential.client_secret] : []), ...privateMembers];
    }
  }
}
