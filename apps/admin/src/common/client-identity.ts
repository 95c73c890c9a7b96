import { randomBytes } from 'node:crypto';
import type { PoolClient } from 'pg';
import { JwksValidationError, PublicJwks, validateClientJwks } from '@writ/oauth';
import { ConflictError, ValidationFailedError } from '@writ/platform';

/** Agent and orchestrator ids: they share one id space (both authenticate at the token endpoint). */
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The statuses of an agent or orchestrator. */
export const CLIENT_STATUSES = ['active', 'suspended'] as const;

/** A public JWKS as registered (example for the OpenAPI document). */
export const JWKS_EXAMPLE = {
  keys: [{ kty: 'EC', crv: 'P-256', kid: 'k1', alg: 'ES256', use: 'sig', x: 'base64url-x', y: 'base64url-y' }],
};

/** Message of a refused client id. */
export const CLIENT_ID_MESSAGE = 'must be 1 to 64 characters: letters, digits, ., _ and -, starting with a letter or digit';

/** A fresh client id such as `agent-3f9a0c1d2e4b5a69`. */
export function generateClientId(prefix: 'agent' | 'orch'): string {
  return `${prefix}-${randomBytes(8).toString('hex')}`;
}

/**
 * Validates a client JWKS (public keys only) and returns its normalised form, or a `400`
 * naming each offending member (`jwks.keys[0].d`).
 */
export function publicJwksOrRefuse(jwks: unknown): PublicJwks {
  try {
    return validateClientJwks(jwks);
  } catch (error) {
    if (error instanceof JwksValidationError) throw new ValidationFailedError([...error.errors], 'the JWKS is not acceptable');
    throw error;
  }
}

/**
 * Inside a transaction: serialises registrations of `id` and refuses an id already taken by
 * an agent or an orchestrator (`409`).
 */
export async function claimClientId(client: PoolClient, id: string): Promise<void> {
  await client.query(`SELECT pg_advisory_xact_lock(hashtext('writ:client-id:' || $1))`, [id]);
  const { rows } = await client.query<{ kind: 'agent' | 'orchestrator' }>(
    `SELECT 'agent' AS kind FROM agents WHERE id = $1 UNION ALL SELECT 'orchestrator' FROM orchestrators WHERE id = $1 LIMIT 1`,
    [id],
  );
  if (rows[0]) throw new ConflictError(`the id ${id} is already registered (as an ${rows[0].kind})`);
}

/** The key ids of a JWKS, for audit events (public information). */
export function kidsOf(jwks: PublicJwks): string[] {
  return jwks.keys.map((key) => key.kid);
}
