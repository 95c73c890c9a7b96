import { Inject, Injectable } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { Dispatcher, request } from 'undici';
import { MasterKey, UnsealError } from '@writ/keys';
import {
  believedTokenLifetime,
  credentialSecrets,
  MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS,
  OAuth2ClientCredentials,
  unsealCredential,
  UpstreamCredential,
  upstreamBackoffSeconds,
  upstreamRetryAfter,
} from '@writ/connectors';
import { type AccountAccessToken, ConnectedAccountError, ConnectedAccounts } from '@writ/accounts';
import { RetryLaterError, TemporarilyUnavailableError } from '@writ/oauth';
import { BadGatewayError, ConnectionRequiredError } from '../gateway-errors';
import { UPSTREAM_ADDRESS_REFUSED, UPSTREAM_DISPATCHER } from './upstream-dispatcher';

/** The sealed credential columns of a connector row. */
export interface SealedCredential {
  connectorId: string;
  /** The connector's `base_url`: the credential opens only for the origin it was sealed for. */
  baseUrl: string;
  type: string | null;
  sealed: Buffer | null;
  fingerprint: string | null;
  /** The verified user of the call's task (for `oauth2_authorization_code`: whose token is injected). */
  user?: { issuer: string; subject: string } | null;
}

/** A header to set on the upstream request. */
export interface CredentialHeader {
  name: string;
  value: string;
  /**
   * A connected account's token due for its refresh, used as it is because the refresh failed
   * transiently (`failed`) or is backing off (`deferred`): still valid, recorded on the call's
   * event (see {@link AccountAccessToken}).
   */
  unrefreshed?: AccountAccessToken['unrefreshed'];
}

/** Told of each call answered `503` without asking a client-credentials token endpoint that is backing off (a metric). */
export type TokenFetchDeferred = (connectorId: string, why: 'backoff' | 'retry_after') => void;

/** Told of each call answered `503` without asking the provider because its connected account's refresh is backing off (a metric). */
export type AccountRefreshDeferred = (connectorId: string) => void;

/** Told of each call sent with its connected account's token unrefreshed (see {@link AccountAccessToken}): a metric. */
export type AccountTokenUnrefreshed = (connectorId: string, why: NonNullable<AccountAccessToken['unrefreshed']>) => void;

interface CachedToken {
  value: string;
  refreshAt: number;
  /** The upstream answered a call made with it (not with a `401`): see {@link UpstreamCredentials.accepted}. */
  accepted?: boolean;
}

/** One upstream token fetch, shared by every call that needs a token while it runs, and its token once it has one. */
interface TokenFlight {
  promise: Promise<CachedToken>;
  /** Set when the fetch succeeds: what a refetch after a `401` compares the rejected token with. */
  token?: CachedToken;
}

/** How long a fetched upstream token is reused when the token endpoint gives no `expires_in`. */
const DEFAULT_UPSTREAM_TOKEN_SECONDS = 300;
/** Largest token response read from an upstream token endpoint. */
const MAX_TOKEN_RESPONSE_BYTES = 64 * 1024;

/**
 * Turns a connector's sealed credential into the header injected upstream. Static
 * credentials are unsealed (and kept in memory per fingerprint, so a rotation is picked up
 * on the next call). For `oauth2_client_credentials` the gateway fetches the upstream
 * token itself, caches it until shortly before it expires, shares one fetch between
 * concurrent calls, backs off a token endpoint that fails transiently, and never hands the
 * token to anyone but the upstream.
 */
@Injectable()
export class UpstreamCredentials {
  private readonly opened = new Map<string, UpstreamCredential>();
  /**
   * The current token fetch per credential. An entry is replaced only by a call that still finds
   * the very entry it found expired or failed (compare-and-set on its identity), so concurrent
   * calls share one fetch; a failed fetch removes itself, so a failure is never kept.
   */
  private readonly tokens = new Map<string, TokenFlight>();
  /**
   * Per connector and token endpoint, after a transient failure of its token endpoint
   * (unreachable, timing out, `5xx`, `429`): the failures in a row, and the instant (ms) before
   * which it is not asked: the backoff ({@link upstreamBackoffSeconds}, as for connected
   * accounts), or its `Retry-After` on a `429` or `503` (capped at an hour) when later (`why`
   * says which). Meanwhile a call that needs a token is a `503` with the seconds left; a cached
   * token still valid is still used. A success clears it. Per instance, as the rest of this
   * cache: N instances ask a down endpoint at most N times per interval.
   */
  private readonly fetchNotBefore = new Map<string, { failures: number; until: number; why: 'backoff' | 'retry_after'; reason: string }>();
  /**
   * Per connector: when this instance last refetched a token because the upstream refused the
   * cached one with `401`. A refetch for a token the upstream never accepted waits
   * {@link MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS} after the last one.
   */
  private readonly lastForcedFetch = new Map<string, number>();

  constructor(
    private readonly master: MasterKey,
    @Inject(UPSTREAM_DISPATCHER) private readonly dispatcher: Dispatcher,
    private readonly accounts: ConnectedAccounts,
    private readonly onFetchDeferred: TokenFetchDeferred = () => undefined,
    private readonly onRefreshDeferred: AccountRefreshDeferred = () => undefined,
    private readonly onUnrefreshedToken: AccountTokenUnrefreshed = () => undefined,
  ) {}

  /**
   * The header carrying the connector's credential. A connector without one, or whose sealed
   * credential does not open for its current destination (a `base_url` or a sealed value
   * changed outside the admin API), fails closed with `502`: nothing is sent.
   */
  async headerFor(sealed: SealedCredential, rejected?: CredentialHeader): Promise<CredentialHeader> {
    // `rejected`: the header the upstream just refused with `401`; its token is dropped and
    // another obtained (within the limits of refetchAfterRefusal), unless a newer one is there.
    const credential = this.open(sealed);
    if (!credential) {
      throw new BadGatewayError(`connector ${sealed.connectorId} has no upstream credential: nothing was sent`, { reason: 'no_upstream_credential' });
    }
    switch (credential.type) {
      case 'bearer':
        return { name: 'authorization', value: `Bearer ${credential.token}` };
      case 'header':
        return { name: credential.name.toLowerCase(), value: credential.value };
      case 'oauth2_client_credentials':
        return { name: 'authorization', value: `Bearer ${(await this.upstreamToken(sealed, credential, rejected)).value}` };
      case 'oauth2_authorization_code': {
        const used = await this.userToken(sealed, credential, rejected);
        return { name: 'authorization', value: `Bearer ${used.token}`, ...(used.unrefreshed ? { unrefreshed: used.unrefreshed } : {}) };
      }
    }
  }

  /**
   * The access token of the task's verified user on this connector (never another user's),
   * refreshed when expired or just rejected by the upstream (`rejected`). A task without a
   * verified user, a user without a connection, or a broken connection is refused (403) before
   * anything is sent. A token due for its refresh whose refresh fails transiently is still used
   * while it has not expired (see {@link ConnectedAccounts.accessToken}).
   */
  private async userToken(
    sealed: SealedCredential,
    credential: Extract<UpstreamCredential, { type: 'oauth2_authorization_code' }>,
    rejected?: CredentialHeader,
  ): Promise<AccountAccessToken> {
    if (!sealed.user) {
      throw new ConnectionRequiredError(
        `connector ${sealed.connectorId} acts as the task's user, and this task has no verified user (declare it with user_token or user): nothing was sent`,
        'no_verified_user',
      );
    }
    try {
      return await this.accounts.accessToken(sealed.connectorId, credential, sealed.user, rejected?.value.replace(/^Bearer /, ''));
    } catch (error) {
      if (!(error instanceof ConnectedAccountError)) throw error;
      if (error.status === 503) {
        // The refresh backs off (the provider not asked): counted where the call's refusal is final, see refused().
        if (error.code === 'refresh_backoff' && error.retryAfterSeconds !== undefined) {
          throw new AccountRefreshDeferredError(sealed.connectorId, error.retryAfterSeconds, `${error.message}: nothing was sent`, error.code);
        }
        throw error.retryAfterSeconds !== undefined
          ? new RetryLaterError(error.retryAfterSeconds, `${error.message}: nothing was sent`, { reason: error.code })
          : new TemporarilyUnavailableError(`${error.message}: nothing was sent`, { reason: error.code });
      }
      throw new ConnectionRequiredError(`${error.message}: nothing was sent`, error.code);
    }
  }

  /** True when a 401 from the upstream may be cured by fetching a fresh token (once). */
  isRefreshable(sealed: SealedCredential): boolean {
    return sealed.type === 'oauth2_client_credentials' || sealed.type === 'oauth2_authorization_code';
  }

  /**
   * The upstream answered a call sent with `header` other than with a `401` (it took the token):
   * a later `401` for that token (revoked, rotated at the provider) is refetched at once, where
   * a token refused from its first use waits (see {@link refetchAfterRefusal}).
   */
  accepted(sealed: SealedCredential, header: CredentialHeader | undefined): void {
    if (sealed.type !== 'oauth2_client_credentials' || !header) return;
    const token = this.tokens.get(this.cacheKey(sealed))?.token;
    if (token && !token.accepted && header.value === `Bearer ${token.value}`) token.accepted = true;
  }

  /** Every secret value currently held for a connector (to scrub them from response headers). */
  secretsOf(sealed: SealedCredential): string[] {
    const credential = this.open(sealed);
    return credential ? credentialSecrets(credential).filter((secret) => secret.length >= 4) : [];
  }

  private open(sealed: SealedCredential): UpstreamCredential | undefined {
    if (!sealed.sealed || !sealed.type) return undefined;
    const key = this.cacheKey(sealed);
    let credential = this.opened.get(key);
    if (!credential) {
      try {
        credential = unsealCredential(this.master, sealed.connectorId, sealed.baseUrl, sealed.sealed);
      } catch (error) {
        if (!(error instanceof UnsealError)) throw error;
        throw new BadGatewayError(
          `the upstream credential of connector ${sealed.connectorId} is not bound to its current base_url (changed outside the admin API?): nothing was sent; set the credential again`,
          { reason: 'upstream_credential_unbound' },
        );
      }
      for (const old of this.opened.keys()) if (old.startsWith(`${sealed.connectorId}\u0000`)) this.opened.delete(old);
      this.opened.set(key, credential);
    }
    return credential;
  }

  /**
   * What an opened credential is cached under: the row, its destination and the sealed bytes
   * themselves (not the fingerprint column, which SQL could copy along with a sealed value),
   * so any change to either is unsealed, and checked, again.
   */
  private cacheKey(sealed: SealedCredential): string {
    return `${sealed.connectorId}\u0000${sealed.baseUrl}\u0000${sealed.sealed ? digestOf(sealed.sealed) : ''}`;
  }

  /**
   * The cached token, or one fetch shared by every concurrent call. A call that finds an entry
   * waits for it; if its token has expired or its fetch failed, the first call to see that
   * replaces the entry (only if it is still the same one) and the others join the replacement.
   * So a call waits on at most two fetches, and a failure reaches only the calls that waited on it.
   */
  private async upstreamToken(sealed: SealedCredential, credential: OAuth2ClientCredentials, rejected?: CredentialHeader): Promise<CachedToken> {
    const key = this.cacheKey(sealed);
    let found = this.tokens.get(key);
    // Only the refused token is dropped (checked and dropped in one step of the event loop):
    // another call may already have replaced it, or be fetching its replacement, which is joined.
    if (found?.token && rejected && rejected.value === `Bearer ${found.token.value}`) {
      this.refetchAfterRefusal(sealed.connectorId, found.token);
      this.tokens.delete(key);
      found = undefined;
    }
    if (!found) return this.startFetch(key, sealed.connectorId, credential);
    try {
      const token = await found.promise;
      if (token.refreshAt > Date.now()) return token;
    } catch {
      // The fetch this call waited on failed (and removed itself): retry once, shared, below.
    }
    const current = this.tokens.get(key);
    if (!current || current === found) return this.startFetch(key, sealed.connectorId, credential);
    // Another call already replaced the entry after this one found it: its fetch is newer than
    // this call, so its token is used as it comes, and its failure is this call's answer.
    return current.promise;
  }

  /**
   * May the token `refused` (by an upstream `401`) be replaced by a fetch now? Yes when the
   * upstream accepted it before (revoked or rotated at the provider since: worth one fetch at
   * once), or when this instance has not refetched a refused token of the connector for
   * {@link MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS}; else `503` with `Retry-After` (the seconds
   * left), nothing sent: an upstream refusing every token would otherwise make every call a
   * token request. Either way this refetch is the connector's latest.
   */
  private refetchAfterRefusal(connectorId: string, refused: CachedToken): void {
    const now = Date.now();
    const last = this.lastForcedFetch.get(connectorId);
    const wait = last === undefined ? 0 : last + MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS * 1000 - now;
    if (!refused.accepted && wait > 0) {
      throw new RetryLaterError(
        Math.ceil(wait / 1000),
        `the upstream of connector ${connectorId} refused a token it never accepted, less than ${MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS} s after the last token fetched for a refusal: no token is fetched again before then, and nothing was sent again`,
        { reason: 'upstream_token_refused' },
      );
    }
    this.lastForcedFetch.set(connectorId, now);
  }

  /**
   * Starts a fetch and makes it the entry of `key`; a failed fetch removes itself (if still the
   * entry). Refused (`503` with `Retry-After`, nothing sent) while the token endpoint backs off
   * after a transient failure, or while its own `Retry-After` lasts. A transient failure is a
   * `503` with the wait it set; a success clears the backoff.
   */
  private startFetch(key: string, connectorId: string, credential: OAuth2ClientCredentials): Promise<CachedToken> {
    const endpoint = `${connectorId}\u0000${credential.token_url}`;
    const backoff = this.fetchNotBefore.get(endpoint);
    if (backoff !== undefined) {
      const wait = backoff.until - Date.now();
      if (wait > 0) {
        throw backoff.why === 'retry_after'
          ? this.tokenEndpointBusy(connectorId, Math.ceil(wait / 1000), 'retry_after')
          : this.tokenEndpointBackingOff(connectorId, Math.ceil(wait / 1000), backoff);
      }
    }
    const promise = this.fetchToken(credential).then(
      (token) => {
        // Only this endpoint's failures in a row count: a success starts the next outage from the first interval.
        this.fetchNotBefore.delete(endpoint);
        return token;
      },
      (error: unknown) => {
        if (!(error instanceof TokenEndpointUnavailable)) throw error;
        // Set before any caller waiting on this fetch resumes: their retry is refused, not sent.
        const failures = (this.fetchNotBefore.get(endpoint)?.failures ?? 0) + 1;
        const backoffSeconds = upstreamBackoffSeconds(failures, Math.random());
        const why = error.retryAfterSeconds !== undefined && error.retryAfterSeconds > backoffSeconds ? 'retry_after' : 'backoff';
        const seconds = why === 'retry_after' ? error.retryAfterSeconds! : backoffSeconds;
        this.fetchNotBefore.set(endpoint, { failures, until: Date.now() + seconds * 1000, why, reason: error.reason });
        const retryAfter = Math.max(1, Math.ceil(seconds));
        if (why === 'retry_after') throw this.tokenEndpointBusy(connectorId, retryAfter);
        throw new RetryLaterError(
          retryAfter,
          `the upstream token endpoint of connector ${connectorId} is unavailable (${error.message}): it is not asked again for ${retryAfter} s, and nothing was sent`,
          { reason: error.reason },
        );
      },
    );
    const flight: TokenFlight = { promise };
    this.tokens.set(key, flight);
    promise.then(
      (token) => {
        flight.token = token;
      },
      () => {
        if (this.tokens.get(key) === flight) this.tokens.delete(key);
      },
    );
    return promise;
  }

  /**
   * A call is forwarded with `header` (its checks passed and its event committed, after any
   * re-check of the call): counted when it carries a connected account's token unrefreshed
   * (once per call, however many times the call was checked, and never for a call refused after
   * its credential was chosen).
   */
  forwarding(sealed: SealedCredential, header: CredentialHeader | undefined): void {
    if (header?.unrefreshed) this.onUnrefreshedToken(sealed.connectorId, header.unrefreshed);
  }

  /**
   * A call was answered with `error` in the end (after any re-check of the call): counted when
   * its token endpoint was not asked because it backs off or its `Retry-After` lasts, or because
   * its connected account's refresh backs off (once per call, however many times the call was
   * checked).
   */
  refused(error: unknown): void {
    if (error instanceof TokenFetchDeferredError) this.onFetchDeferred(error.connectorId, error.why);
    else if (error instanceof AccountRefreshDeferredError) this.onRefreshDeferred(error.connectorId);
  }

  /** `deferred`: this call did not ask the endpoint (its earlier answer is heeded). */
  private tokenEndpointBusy(connectorId: string, seconds: number, deferred?: 'retry_after'): RetryLaterError {
    const description = `the upstream token endpoint of connector ${connectorId} asked not to be called for ${seconds} s (Retry-After): nothing was sent`;
    return deferred
      ? new TokenFetchDeferredError(connectorId, deferred, seconds, description, 'upstream_token_retry_after')
      : new RetryLaterError(seconds, description, { reason: 'upstream_token_retry_after' });
  }

  private tokenEndpointBackingOff(connectorId: string, seconds: number, backoff: { failures: number; reason: string }): RetryLaterError {
    return new TokenFetchDeferredError(
      connectorId,
      'backoff',
      seconds,
      `the upstream token endpoint of connector ${connectorId} was unavailable at the last ${backoff.failures > 1 ? `${backoff.failures} token requests` : 'token request'} ` +
        `(${backoff.reason}): it is not asked again for ${seconds} s, and nothing was sent`,
      'upstream_token_backoff',
    );
  }

  /** RFC 6749 §4.4 with HTTP Basic client authentication (§2.3.1: form-encoded id and secret). */
  private async fetchToken(credential: OAuth2ClientCredentials): Promise<CachedToken> {
    const basic = Buffer.from(`${encodeURIComponent(credential.client_id)}:${encodeURIComponent(credential.client_secret)}`).toString('base64');
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    if (credential.scope) form.set('scope', credential.scope);
    let status: number;
    let text: string;
    let retryAfter: string | string[] | undefined;
    try {
      const response = await request(credential.token_url, {
        method: 'POST',
        dispatcher: this.dispatcher,
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form.toString(),
        signal: AbortSignal.timeout(10_000),
      });
      status = response.statusCode;
      retryAfter = response.headers['retry-after'];
      text = await readLimited(response.body, MAX_TOKEN_RESPONSE_BYTES);
    } catch (error) {
      if ((error as { code?: string }).code === UPSTREAM_ADDRESS_REFUSED) {
        throw new BadGatewayError('the upstream token endpoint is not reachable from the gateway (WRIT_UPSTREAM_ALLOWED_NETWORKS)', {
          reason: 'upstream_address_refused',
        });
      }
      if ((error as { name?: string }).name === 'TimeoutError') {
        throw new TokenEndpointUnavailable('upstream_token_timeout', 'it did not answer in time');
      }
      throw new TokenEndpointUnavailable('upstream_token_unreachable', 'it could not be reached');
    }
    let body: { access_token?: unknown; expires_in?: unknown; token_type?: unknown } = {};
    try {
      const parsed: unknown = JSON.parse(text);
      // Only a JSON object is a token response (`null`, an array, a string: refused below).
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) body = parsed;
    } catch {
      /* refused below */
    }
    // The endpoint's own trouble, whatever its body says: backed off, or its Retry-After heeded when longer.
    if (status >= 500 || status === 429) {
      throw new TokenEndpointUnavailable(`upstream_token_status_${status}`, `it answered ${status}`, upstreamRetryAfter(status, retryAfter));
    }
    if (status !== 200 || typeof body.access_token !== 'string' || body.access_token === '') {
      throw new BadGatewayError('the upstream credential could not be obtained', { reason: `upstream_token_status_${status}` });
    }
    const lifetime = lifetimeOf(body.expires_in);
    // Refresh a little before expiry: 10% of the lifetime, at most 60 s early.
    const margin = Math.min(60, lifetime * 0.1);
    return { value: body.access_token, refreshAt: Date.now() + (lifetime - margin) * 1000 };
  }
}

/**
 * How long a fetched token is reused, from the answer's `expires_in`, as for a user's connected
 * account (oauth4webapi's reading, then believedTokenLifetime): absent, the default; a number
 * (or a numeric string) at least 0, bounded to [MIN_UPSTREAM_TOKEN_SECONDS, a day], so that
 * `expires_in: 0` is neither every call a token request nor the default's five minutes; anything
 * else (negative, not a number) is an unacceptable answer, refused with `502`.
 */
function lifetimeOf(expiresIn: unknown): number {
  if (expiresIn === undefined) return DEFAULT_UPSTREAM_TOKEN_SECONDS;
  const seconds = typeof expiresIn === 'number' ? expiresIn : typeof expiresIn === 'string' && /^\d+(\.\d+)?$/.test(expiresIn) ? Number(expiresIn) : NaN;
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new BadGatewayError('the upstream token endpoint answered an expires_in that is not a number of seconds', {
      reason: 'upstream_token_invalid_expires_in',
    });
  }
  return believedTokenLifetime(seconds);
}

/** A call refused without asking a client-credentials token endpoint (see {@link UpstreamCredentials.refused}). */
class TokenFetchDeferredError extends RetryLaterError {
  constructor(
    readonly connectorId: string,
    readonly why: 'backoff' | 'retry_after',
    seconds: number,
    description: string,
    reason: string,
  ) {
    super(seconds, description, { reason });
  }
}

/** A call refused without asking the provider, its connected account's refresh backing off (see {@link UpstreamCredentials.refused}). */
class AccountRefreshDeferredError extends RetryLaterError {
  constructor(
    readonly connectorId: string,
    seconds: number,
    description: string,
    reason: string,
  ) {
    super(seconds, description, { reason });
  }
}

/**
 * A transient failure of a token endpoint (unreachable, timing out, `5xx`, `429`), with the
 * `Retry-After` it sent on a `429` or `503` (seconds, capped), if any: backed off.
 */
class TokenEndpointUnavailable extends Error {
  constructor(
    readonly reason: string,
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

async function readLimited(body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) throw new Error('token response too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The SHA-256 of sealed bytes, by buffer: the connector cache hands every call the same buffer
 * of a connector row (a row read again is a new buffer, digested again), and two digests per
 * call were ~2% of its time.
 */
const digests = new WeakMap<Buffer, string>();

function digestOf(bytes: Buffer): string {
  let digest = digests.get(bytes);
  if (digest === undefined) {
    digest = createHash('sha256').update(bytes).digest('base64url');
    digests.set(bytes, digest);
  }
  return digest;
}
