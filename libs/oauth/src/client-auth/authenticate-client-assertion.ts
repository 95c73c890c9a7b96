import type { JSONWebKeySet } from 'jose';
import type { FormParams } from '../params/parse-form-body';
import { DEFAULT_ASSERTION_CLOCK_TOLERANCE_SECONDS } from './client-assertion.constants';
import { clientAuthenticationFailed } from './client-auth-failure';
import type { JtiStore } from './jti-store.interface';
import { readClientAssertion } from './read-client-assertion';
import { verifyClientAssertion, type VerifiedClientAssertion, type VerifyClientAssertionOptions } from './verify-client-assertion';

/** Input of {@link authenticateClientAssertion}. */
export interface AuthenticateClientAssertionOptions {
  /** The parsed form body of the request. */
  readonly params: FormParams;
  /** This server's issuer identifier. */
  readonly issuer: string;
  /**
   * The registered JWKS of an active client, or `undefined` when the client is unknown
   * (reported as `client_unknown`). To report a suspended client, throw
   * `clientAuthenticationFailed('client_inactive')` from here.
   */
  readonly loadJwks: (clientId: string) => Promise<JSONWebKeySet | undefined>;
  readonly jtiStore: JtiStore;
  readonly now?: Date;
  readonly maxLifetimeSeconds?: number;
  readonly clockToleranceSeconds?: number;
  /** See {@link VerifyClientAssertionOptions.ecdsaOnThreadPool}. */
  readonly ecdsaOnThreadPool?: boolean;
}

/**
 * The whole `private_key_jwt` check in its safe order: read the claimed client, load its
 * keys, verify the assertion, and only then consume the `jti` (so an unauthenticated
 * caller cannot burn another client's `jti`s). A replay is `invalid_client` with reason
 * `assertion_replay`.
 */
export async function authenticateClientAssertion(options: AuthenticateClientAssertionOptions): Promise<VerifiedClientAssertion> {
  const claimed = readClientAssertion(options.params);
  const jwks = await options.loadJwks(claimed.clientId);
  if (jwks === undefined) throw clientAuthenticationFailed('client_unknown');
  const tolerance = options.clockToleranceSeconds ?? DEFAULT_ASSERTION_CLOCK_TOLERANCE_SECONDS;
  const verified = await verifyClientAssertion({
    assertion: claimed.assertion,
    clientId: claimed.clientId,
    issuer: options.issuer,
    jwks,
    now: options.now,
    maxLifetimeSeconds: options.maxLifetimeSeconds,
    clockToleranceSeconds: tolerance,
    ecdsaOnThreadPool: options.ecdsaOnThreadPool,
  });
  // An assertion is still accepted up to `tolerance` after its exp, so remember it that long.
  const retainUntil = new Date(verified.expiresAt.getTime() + tolerance * 1000);
  const first = await options.jtiStore.consume(verified.clientId, verified.jti, retainUntil);
  if (!first) throw clientAuthenticationFailed('assertion_replay');
  return verified;
}
