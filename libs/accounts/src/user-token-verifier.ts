import { createRemoteJWKSet, customFetch, decodeJwt, errors as joseErrors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import type { Pool } from 'pg';
import { IDENTITY_PROVIDER_INTEGRITY_COLUMNS, identityProviderIntegrityFieldsOf, type IdentityProviderIntegrityRow, type RowIntegrity } from '@writ/grants';
import { requestTextProblem } from '@writ/platform';
import { type Dispatcher, fetch as undiciFetch } from 'undici';
import { IdentityProviderUnavailableError, UserTokenError } from './account-errors';
import { readBounded } from './read-bounded';

/** A user whose identity Writ verified: the issuer of their token and its `sub`. */
export interface VerifiedUser {
  issuer: string;
  subject: string;
}

/** A trusted identity provider, as registered. */
export interface IdentityProviderRow {
  issuer: string;
  jwks_uri: string;
  audience: string;
  asserting_orchestrators: string[];
}

/** Asymmetric algorithms only: `none` and HMAC (a shared secret Writ does not have) never verify a user. */
const USER_TOKEN_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
/** Seconds of clock skew allowed between Writ and an identity provider (`exp`, `nbf`, `iat`). */
const CLOCK_TOLERANCE_SECONDS = 5;
/** How long a provider row (and its key set) is reused before it is read again; also how long an issuer found unregistered is believed so. */
const PROVIDER_CACHE_MS = 5_000;
/**
 * Most issuers remembered as unregistered (then forgotten all at once). Kept apart from the
 * registered providers: the `iss` read before any signature check is the caller's choice, and a
 * flood of made-up issuers must not evict a registered provider's key set (forcing its JWKS to
 * be fetched again, and its refetch cooldown to start over).
 */
const MAX_UNREGISTERED_ISSUERS = 1_000;
/** How long a JWKS fetch waits, body included. */
const KEY_SET_TIMEOUT_MS = 5_000;
/**
 * After a failed JWKS fetch, how long the provider's keys are not asked for again (users' tokens
 * of that provider get the outage's `503` meanwhile): a provider that is down is not sent one
 * request per token presented, whoever presents them (`/v1/me/connections` is open to anyone).
 */
const KEY_SET_FAILURE_BACKOFF_MS = 2_000;
/** Longest `iss` looked up (a registered issuer is at most 2048 characters). */
const MAX_ISSUER_LENGTH = 2048;
/**
 * Largest JWK Set read from an identity provider, counted after decompression: far above any
 * real key set (a few KiB, tens with certificate chains), far below what would fill the memory
 * (a gzip bomb inflates as it is read, so reading stops as soon as the limit is passed).
 */
const MAX_KEY_SET_BYTES = 1024 * 1024;

/**
 * Verifies users' tokens from trusted identity providers (registered by issuer, JWKS URI and
 * audience): the signature by a key of the issuer's JWKS (fetched through the guarded
 * dispatcher, so the JWKS URI passes the same destination checks as any upstream), `iss`,
 * `aud`, `exp`, an `iat` (when present) not in the future, and a `sub`. Also says whether an orchestrator may assert users of an issuer
 * without a token. A provider row whose integrity tag does not verify (inserted or changed by a
 * database administrator, without the master key) stands as absent: its issuer is untrusted.
 */
export class UserTokenVerifier {
  /** Registered providers only (so as many as the admins registered), each with its key set. */
  private readonly providers = new Map<string, { row: IdentityProviderRow; keys: JWTVerifyGetKey; until: number }>();
  /** Issuers found unregistered, until when that is believed (see {@link MAX_UNREGISTERED_ISSUERS}). */
  private readonly unregistered = new Map<string, number>();

  constructor(
    private readonly pool: Pool,
    private readonly dispatcher: Dispatcher,
    private readonly integrity: RowIntegrity,
  ) {}

  /** The verified user of `token`, or a {@link UserTokenError} naming why not. */
  async verify(token: string): Promise<VerifiedUser> {
    return (await this.verifyWithProvider(token)).user;
  }

  /** As {@link verify}, with the provider registration the token was verified against (to check again at commit: {@link providerAt}). */
  async verifyWithProvider(token: string): Promise<{ user: VerifiedUser; provider: IdentityProviderRow }> {
    let issuer: unknown;
    try {
      issuer = decodeJwt(token).iss;
    } catch {
      throw new UserTokenError('malformed', 'the user token is not a JWT');
    }
    if (typeof issuer !== 'string') throw new UserTokenError('no_issuer', 'the user token has no iss');
    // Not a registered issuer's spelling (NUL cannot reach PostgreSQL): refused before any lookup.
    if (issuer.length === 0 || issuer.length > MAX_ISSUER_LENGTH || requestTextProblem(issuer) !== undefined) {
      throw new UserTokenError('untrusted_issuer', 'the user token is not from a trusted identity provider');
    }
    const provider = await this.provider(issuer);
    if (!provider) throw new UserTokenError('untrusted_issuer', 'the user token is not from a trusted identity provider');
    try {
      const { payload } = await jwtVerify(token, provider.keys, {
        issuer: provider.row.issuer,
        audience: provider.row.audience,
        algorithms: USER_TOKEN_ALGS,
        requiredClaims: ['exp', 'sub'],
        clockTolerance: CLOCK_TOLERANCE_SECONDS,
      });
      // jose checks `iat` against the clock only with `maxTokenAge`: a token issued in the future
      // (a provider's broken clock, or one minted ahead to outlive its revocation) is refused here.
      if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + CLOCK_TOLERANCE_SECONDS) {
        throw new UserTokenError('claim_iat', "the user token's iat is in the future");
      }
      // A sub with a control character or a lone surrogate would be stored as another text (or not
      // at all): the user named would not be the user the provider signed for.
      if (typeof payload.sub !== 'string' || payload.sub.length === 0 || payload.sub.length > 255 || requestTextProblem(payload.sub) !== undefined) {
        throw new UserTokenError('no_subject', 'the user token has no usable sub');
      }
      return { user: { issuer: provider.row.issuer, subject: payload.sub }, provider: provider.row };
    } catch (error) {
      if (error instanceof UserTokenError) throw error;
      if (error instanceof joseErrors.JWTExpired) throw new UserTokenError('expired', 'the user token has expired');
      if (error instanceof joseErrors.JWTClaimValidationFailed) {
        throw new UserTokenError(`claim_${error.claim}`, `the user token's ${error.claim} is not acceptable`);
      }
      if (error instanceof IdentityProviderUnavailableError) throw error;
      // Keys that could not be had are the provider's outage, never the caller's fault; a key id
      // missing from a set that was fetched (JWKSNoMatchingKey) is the caller's.
      if (error instanceof joseErrors.JWKSTimeout) throw new IdentityProviderUnavailableError(undefined, { cause: error });
      if (!(error instanceof joseErrors.JOSEError))
        throw new IdentityProviderUnavailableError("the identity provider's keys could not be used", { cause: error });
      throw new UserTokenError('signature', "the user token's signature does not verify with the identity provider's keys");
    }
  }

  /** True when `orchestratorId` is registered as trusted to assert users of `issuer`. */
  async mayAssert(orchestratorId: string, issuer: string): Promise<boolean> {
    return (await this.trustedProvider(issuer))?.asserting_orchestrators.includes(orchestratorId) ?? false;
  }

  /** The registration of `issuer` (read again after a few seconds), `undefined` when none stands. */
  async trustedProvider(issuer: string): Promise<IdentityProviderRow | undefined> {
    return (await this.provider(issuer))?.row;
  }

  /**
   * The registration of `issuer` as it stands in the caller's transaction, share-locked until it
   * ends: a removal committed before is seen, one asked for after waits for the caller's commit.
   * `undefined` when none stands (removed, or its tag does not verify). The registrations read
   * for verification are kept a few seconds; a caller that commits on one checks it again here,
   * and when it stands no longer (or differs), what is kept of that issuer is dropped.
   */
  async providerAt(tx: Pick<Pool, 'query'>, issuer: string): Promise<IdentityProviderRow | undefined> {
    const { rows } = await tx.query<IdentityProviderIntegrityRow>(
      `SELECT ${IDENTITY_PROVIDER_INTEGRITY_COLUMNS} FROM identity_providers WHERE issuer = $1 FOR SHARE`,
      [issuer],
    );
    const row = this.verifiedRow(rows[0]);
    const kept = this.providers.get(issuer)?.row;
    if (!row || !kept || !sameProvider(row, kept)) this.providers.delete(issuer);
    return row;
  }

  private verifiedRow(read: IdentityProviderIntegrityRow | undefined): IdentityProviderRow | undefined {
    return read && this.integrity.verifyIdentityProvider(identityProviderIntegrityFieldsOf(read), read.integrity_tag)
      ? { issuer: read.issuer, jwks_uri: read.jwks_uri, audience: read.audience, asserting_orchestrators: read.asserting_orchestrators }
      : undefined;
  }

  private async provider(issuer: string) {
    const now = Date.now();
    const cached = this.providers.get(issuer);
    if (cached && cached.until > now) return cached;
    if (!cached && (this.unregistered.get(issuer) ?? 0) > now) return undefined;
    const { rows } = await this.pool.query<IdentityProviderIntegrityRow>(
      `SELECT ${IDENTITY_PROVIDER_INTEGRITY_COLUMNS} FROM identity_providers WHERE issuer = $1`,
      [issuer],
    );
    // Verified once per cache fill; a row that does not verify is taken as absent (and reported).
    const row = this.verifiedRow(rows[0]);
    if (!row) {
      this.providers.delete(issuer);
      if (this.unregistered.size >= MAX_UNREGISTERED_ISSUERS) this.unregistered.clear();
      this.unregistered.set(issuer, Date.now() + PROVIDER_CACHE_MS);
      return undefined;
    }
    this.unregistered.delete(issuer);
    // Read again after the query: requests that raced to fill the cache (a cold instance, tokens
    // sent at once) share the first one's key set, so its JWKS is fetched once, not once each.
    const current = this.providers.get(issuer);
    const keys = current?.row.jwks_uri === row.jwks_uri ? current.keys : this.keySet(row.jwks_uri);
    const entry = { row, keys, until: Date.now() + PROVIDER_CACHE_MS };
    this.providers.set(issuer, entry);
    return entry;
  }

  /**
   * The key set at `jwksUri`, fetched through the guarded dispatcher: kept 10 minutes, fetched
   * again for an unknown key id at most every 30 s (jose's cooldown), and after a failed fetch not
   * asked for again before {@link KEY_SET_FAILURE_BACKOFF_MS} (the outage's error meanwhile).
   */
  private keySet(jwksUri: string): JWTVerifyGetKey {
    let failedAt = Number.NEGATIVE_INFINITY;
    return createRemoteJWKSet(new URL(jwksUri), {
      timeoutDuration: KEY_SET_TIMEOUT_MS,
      [customFetch]: async (url: string, options: { headers: Headers; method: string; signal: AbortSignal }) => {
        const wait = failedAt + KEY_SET_FAILURE_BACKOFF_MS - Date.now();
        if (wait > 0) {
          throw new IdentityProviderUnavailableError(
            `the identity provider's keys could not be fetched a moment ago (not asked again for ${Math.ceil(wait / 1000)} s)`,
          );
        }
        try {
          return await fetchKeySet(this.dispatcher, url, options);
        } catch (error) {
          failedAt = Date.now();
          throw error;
        }
      },
    });
  }
}

/** Whether two registrations of an issuer trust the same users the same way (keys, audience, asserting orchestrators). */
function sameProvider(a: IdentityProviderRow, b: IdentityProviderRow): boolean {
  return (
    a.issuer === b.issuer &&
    a.jwks_uri === b.jwks_uri &&
    a.audience === b.audience &&
    a.asserting_orchestrators.length === b.asserting_orchestrators.length &&
    a.asserting_orchestrators.every((id, index) => id === b.asserting_orchestrators[index])
  );
}

/**
 * Fetches an identity provider's JWK Set for jose through the guarded dispatcher. Whatever keeps
 * the keys from Writ (a refused or failed connection, the timeout, an answer other than `200`,
 * one over {@link MAX_KEY_SET_BYTES}, a body that is not a JWK Set) is an {@link IdentityProviderUnavailableError}: thrown from
 * here, jose passes it on as it is, so the verifier never mistakes the provider's outage for a
 * token that does not verify.
 */
async function fetchKeySet(dispatcher: Dispatcher, url: string, options: { headers: Headers; method: string; signal: AbortSignal }): Promise<Response> {
  const unavailable = (why: string, cause?: unknown) =>
    new IdentityProviderUnavailableError(`the identity provider's keys could not be fetched (${options.signal.aborted ? 'timed out' : why})`, { cause });
  let text: string;
  try {
    const response = await undiciFetch(url, {
      headers: options.headers as never,
      method: options.method,
      signal: options.signal,
      redirect: 'manual',
      dispatcher,
    });
    if (response.status !== 200) {
      await response.body?.cancel().catch(() => undefined);
      throw unavailable(`its JWKS endpoint answered ${response.status}`);
    }
    const read = await readBounded(response.body as AsyncIterable<Uint8Array> | null, MAX_KEY_SET_BYTES);
    if (!read) throw unavailable(`its JWKS endpoint answered more than ${MAX_KEY_SET_BYTES} bytes`);
    text = read.toString('utf8');
  } catch (error) {
    throw error instanceof IdentityProviderUnavailableError ? error : unavailable('the connection failed', error);
  }
  let set: unknown;
  try {
    set = JSON.parse(text);
  } catch (error) {
    throw unavailable('its JWKS endpoint did not answer JSON', error);
  }
  const keys = (set as { keys?: unknown } | null)?.keys;
  if (typeof set !== 'object' || !Array.isArray(keys) || !keys.every((key) => typeof key === 'object' && key !== null && !Array.isArray(key))) {
    throw unavailable('its JWKS endpoint did not answer a JWK Set');
  }
  return new Response(text, { status: 200, headers: { 'content-type': 'application/json' } });
}
