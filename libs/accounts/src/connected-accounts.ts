import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import * as oauth from 'oauth4webapi';
import type { Pool, PoolClient } from 'pg';
import { type AuditEventInput, type AuditService, AuditUnavailableError, isConnectionError } from '@writ/audit';
import {
  MAX_UPSTREAM_RETRY_AFTER_SECONDS,
  MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS,
  type OAuth2AuthorizationCode,
  unsealCredential,
  UPSTREAM_BACKOFF_STEPS,
  upstreamBackoffSchedule,
} from '@writ/connectors';
import { type MasterKey, type RewrapControl, type RewrapCount, rewrapInBatches, UNCONTROLLED, UnsealError } from '@writ/keys';
import { positionInstantSql } from '@writ/database';
import { isPositionInstant } from '@writ/platform';
import { ConnectedAccountError } from './account-errors';
import { UpstreamOAuthClient, UpstreamOAuthError, type UpstreamTokenSet } from './upstream-oauth-client';
import type { VerifiedUser } from './user-token-verifier';

/** A connection as APIs show it: never a token. */
export interface ConnectionView {
  id: string;
  connector_id: string;
  user: { iss: string; sub: string };
  status: 'active' | 'broken';
  scopes: string[];
  broken_error: string | null;
  access_expires_at: string | null;
  connected_at: string;
  refreshed_at: string | null;
}

/** A freshly issued connect link (its URL is shown once). */
export interface ConnectLink {
  url: string;
  expires_at: string;
  connector_id: string;
  user: { iss: string; sub: string };
}

/**
 * A position in the list of connections: the last row's `connected_at` (ISO 8601 UTC, to the
 * microsecond) and `id`. It carries no filter: the filters of every page come from the caller.
 */
export interface ConnectionPosition {
  connectedAt: string;
  id: string;
}

const POSITION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Shape check of a decoded connection list cursor `{c: connected_at, i: id}`: a real UTC instant
 * from 1970 on (see {@link isPositionInstant}: compared as text by PostgreSQL, so an impossible
 * date is refused here, not by the database) and a UUID.
 */
export function isConnectionCursor(value: unknown): value is { c: string; i: string } {
  if (typeof value !== 'object' || value === null) return false;
  const { c, i } = value as { c?: unknown; i?: unknown };
  return typeof i === 'string' && POSITION_ID.test(i) && isPositionInstant(c);
}

/** The cursor fields of a position (see {@link isConnectionCursor}). */
export function connectionCursorOf(position: ConnectionPosition): { c: string; i: string } {
  return { c: position.connectedAt, i: position.id };
}

/**
 * The access token a gateway call is sent with. `unrefreshed` is set when the token was due for
 * its refresh (inside the 30 s margin) and is used as it is, having more than a couple of
 * seconds left, because its refresh cannot be had right now: `failed`, the refresh this call
 * waited on failed transiently (the provider unreachable, timing out, `5xx`, `429`);
 * `deferred`, the refresh is backing off after such a failure.
 */
export interface AccountAccessToken {
  token: string;
  unrefreshed?: 'failed' | 'deferred';
}

/** Who does something to a connection, for the audit trail. */
export type ConnectionActor = AuditEventInput['actor'];

interface AccountRow {
  id: string;
  connector_id: string;
  user_issuer: string;
  user_subject: string;
  status: 'active' | 'broken';
  scopes: string[];
  tokens_sealed: Buffer;
  access_expires_at: Date | null;
  broken_error: string | null;
  connected_at: Date;
  refreshed_at: Date | null;
}

/** An account with its refresh lease ({@link LEASE_COLUMNS}). */
interface LeasedAccountRow extends AccountRow {
  lease_holder: string | null;
  /** A refresh holds the lease now. */
  lease_live: boolean;
  /**
   * The access token has more than {@link STILL_USABLE_SECONDS} left (it may be inside the
   * refresh margin): usable for a call whose refresh cannot be had right now.
   */
  access_valid: boolean;
  /**
   * Seconds until the last refresh forced by an upstream `401` is {@link MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS}
   * old (0 when it is, or there was none): the next forced refresh waits until then.
   */
  refresh_wait: number;
  /** Refresh attempts in a row that failed transiently (the provider unavailable); 0 after a success or a reconnect. */
  refresh_failures: number;
  /**
   * Seconds until the backoff after the last transient failure is over (0 when it is, or there
   * was none): no refresh of the account is claimed before then.
   */
  retry_wait: number;
}

interface SealedTokens {
  access_token: string;
  refresh_token?: string;
}

interface ConnectorCredentialRow {
  id: string;
  base_url: string;
  credential_type: string | null;
  credential_sealed: Buffer | null;
}

/** How long a connect link stays usable. */
export const CONNECT_LINK_TTL_SECONDS = 600;
/**
 * An access token this close to its expiry is refreshed before use. Every lifetime believed is
 * at least twice this (MIN_UPSTREAM_TOKEN_SECONDS): a refreshed token is used for 30 s at least.
 */
const EXPIRY_MARGIN_MS = 30_000;
/**
 * How long a refresh holds its account's lease: well past the upstream call's own timeout
 * (10 s), so that only a holder that crashed or froze loses it to another caller.
 */
const REFRESH_LEASE_SECONDS = 30;
/**
 * Longest a caller waits for a refresh another caller holds the lease of (then 503): past the
 * upstream call's timeout, so that a live holder's outcome is always seen.
 */
const REFRESH_WAIT_MS = 12_000;
/** First and longest pause between two reads of a leased account while waiting (doubling). */
const REFRESH_POLL_FIRST_MS = 25;
const REFRESH_POLL_MAX_MS = 400;
/** First and longest pause between two attempts to store a rotated refresh token PostgreSQL failed to take (doubling). */
const STORE_RETRY_FIRST_MS = 100;
const STORE_RETRY_MAX_MS = 2_000;
/**
 * An access token inside the refresh margin whose refresh cannot be had right now (another
 * caller holds the lease, the provider failed transiently, or the refresh is backing off) is
 * still used for the call while it has more than this left: one about to expire would die on
 * its way to the upstream.
 */
const STILL_USABLE_SECONDS = 2;
/** PostgreSQL out of reach (or a lock or statement timeout): worth trying again. */
function unavailable(error: unknown): boolean {
  return error instanceof AuditUnavailableError || isConnectionError(error);
}

/** Who refreshes, disconnects a dead grant, or discards tokens, in audit events. */
const REFRESHER = { type: 'system' as const, id: 'connected-accounts' };
/** The cookie binding a connect attempt to the browser that opened the link. */
export const CONNECT_COOKIE = 'writ_connect';

/** Upstream revocations in flight at once when a connector's removal revokes every user's grant. */
const UPSTREAM_REVOCATIONS_AT_ONCE = 8;

const ACCOUNT_COLUMNS = `id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, access_expires_at, broken_error, connected_at, refreshed_at`;
/** The refresh lease and token validity of an account, by PostgreSQL's clock (one clock for every instance). */
const LEASE_COLUMNS = `refresh_lease_holder AS lease_holder, COALESCE(refresh_lease_expires_at > now(), false) AS lease_live,
  (access_expires_at IS NULL OR access_expires_at > now() + make_interval(secs => ${STILL_USABLE_SECONDS})) AS access_valid,
  GREATEST(0, COALESCE(ceil(extract(epoch FROM forced_refreshed_at + make_interval(secs => ${MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS}) - now())), 0))::int AS refresh_wait,
  refresh_failures, GREATEST(0, COALESCE(ceil(extract(epoch FROM refresh_retry_at - now())), 0))::int AS retry_wait`;

function sha256(value: string): string {
  return createHash('sha256').update(value).digest('base64url');
}

function sameHash(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/**
 * The sealing context of a user's upstream tokens: the connector, the origin of its token
 * endpoint and the user. A sealed row copied to another user or connector, or left in place
 * while `token_url` moves to another host, does not open.
 */
export function accountSealContext(connectorId: string, tokenUrl: string, user: VerifiedUser): string {
  return `writ/connected-account/v1\nconnector:${connectorId}\norigin:${new URL(tokenUrl).origin}\niss:${user.issuer}\nsub:${user.subject}`;
}

/**
 * Per-user connected accounts: connect links (authorization code + PKCE S256 + `state`,
 * one-time, short-lived, bound to a user and to the browser that opened them), the users'
 * upstream tokens sealed per (connector, user), refresh single-flight across instances (a lease
 * on the account row, no transaction open across the upstream call, rotation stored only while
 * the lease is held), `broken` when
 * the upstream refuses a refresh (or a token without a refresh token expires or is refused),
 * and upstream revocation on disconnect. Every step is an
 * audit event without tokens.
 */
export class ConnectedAccounts {
  constructor(
    private readonly pool: Pool,
    private readonly audit: AuditService,
    private readonly master: MasterKey,
    private readonly client: UpstreamOAuthClient,
    /** Writ's callback URL (registered at the provider as the redirect URI). */
    private readonly callbackUrl: string,
    /** Base of connect link URLs (`<issuer>/connect/`). */
    private readonly linkBase: string,
  ) {}

  /** The refresh running in this process per account: concurrent callers share it. */
  private readonly refreshing = new Map<string, Promise<AccountAccessToken>>();

  /** Issues a one-time connect link for `user` on `connectorId`. */
  async createLink(
    connectorId: string,
    user: VerifiedUser,
    actor: ConnectionActor,
    within?: (tx: PoolClient, link: Omit<ConnectLink, 'url'>) => Promise<void>,
  ): Promise<ConnectLink> {
    await this.credentialOf(connectorId);
    const token = randomBytes(32).toString('base64url');
    const expiresAt = new Date(Date.now() + CONNECT_LINK_TTL_SECONDS * 1000);
    // Only while the connector exists (key-share locked, so a removal in flight is waited for
    // and seen): one removed since the read above is the same 404 as for a fresh request.
    const shown = { expires_at: expiresAt.toISOString(), connector_id: connectorId, user: { iss: user.issuer, sub: user.subject } };
    const { result: issued } = await this.audit.recordWith(
      async (tx) => {
        const inserted =
          (
            await tx.query(
              `INSERT INTO connect_links (id, connector_id, user_issuer, user_subject, created_by, expires_at)
               SELECT $1::text, id, $3::text, $4::text, $5::text, $6::timestamptz FROM connectors WHERE id = $2 FOR KEY SHARE`,
              [sha256(token), connectorId, user.issuer, user.subject, `${actor.type}:${actor.id ?? ''}`, expiresAt],
            )
          ).rowCount === 1;
        // The caller's own step in the link's transaction (an Idempotency-Key taken with it), given the link without its secret.
        if (inserted && within) await within(tx, shown);
        return inserted;
      },
      (inserted) => (inserted ? [this.event('connection.link_issued', 'success', actor, connectorId, user, { expires_at: expiresAt.toISOString() })] : []),
    );
    if (!issued) throw new ConnectedAccountError('not_found', `no connector ${connectorId}`, 404);
    return { url: `${this.linkBase}${token}`, ...shown };
  }

  /**
   * What an unopened connect link is for (its connector and user), to ask the person holding it
   * before the flow starts; changes nothing. An unknown, used or expired link is refused as by
   * {@link openLink}.
   */
  async describeLink(
    token: string,
    auditRefusal: () => Promise<boolean> = async () => true,
  ): Promise<{ connectorId: string; user: { iss: string; sub: string } }> {
    const { rows } = await this.pool.query<{ connector_id: string; user_issuer: string; user_subject: string }>(
      `SELECT connector_id, user_issuer, user_subject FROM connect_links WHERE id = $1 AND opened_at IS NULL AND expires_at > now()`,
      [sha256(token)],
    );
    const link = rows[0];
    if (!link) return this.refuseLink(auditRefusal);
    return { connectorId: link.connector_id, user: { iss: link.user_issuer, sub: link.user_subject } };
  }

  /** An unknown, used or expired link: audited (while the caller's count allows it) and refused. */
  private async refuseLink(auditRefusal: () => Promise<boolean>): Promise<never> {
    // Anyone can guess at links: the caller counts refusals per source and says whether this one is still audited on its own.
    if (await auditRefusal())
      await this.audit.record(this.event('connection.link_refused', 'denied', { type: 'anonymous' }, null, null, { reason: 'unknown, used or expired link' }));
    throw new ConnectedAccountError('link_invalid', 'this connect link is unknown, already used or expired: ask for a new one', 400);
  }

  /**
   * Opens a connect link (once): returns the provider's authorization URL to redirect to and
   * the browser-binding value to set as a cookie. An unknown, used or expired link is refused.
   */
  async openLink(token: string, auditRefusal: () => Promise<boolean> = async () => true): Promise<{ redirect: string; browser: string }> {
    const state = oauth.generateRandomState();
    const verifier = oauth.generateRandomCodeVerifier();
    const browser = randomBytes(32).toString('base64url');
    const id = sha256(token);
    const { rows } = await this.pool.query<{ connector_id: string; user_issuer: string; user_subject: string }>(
      `UPDATE connect_links SET opened_at = now(), state_hash = $2, browser_hash = $3, verifier_sealed = $4
        WHERE id = $1 AND opened_at IS NULL AND expires_at > now()
        RETURNING connector_id, user_issuer, user_subject`,
      [id, sha256(state), sha256(browser), this.master.seal(verifier, `writ/connect-link/v1\n${id}`)],
    );
    const link = rows[0];
    if (!link) return this.refuseLink(auditRefusal);
    const user = { issuer: link.user_issuer, subject: link.user_subject };
    const credential = await this.credentialOf(link.connector_id);
    const redirect = await this.client.authorizationUrl(credential, { redirectUri: this.callbackUrl, state, codeVerifier: verifier });
    await this.audit.record(this.event('connection.link_opened', 'info', { type: 'anonymous' }, link.connector_id, user, {}));
    return { redirect, browser };
  }

  /**
   * The provider's redirect back to Writ: finds the attempt by `state` (once), checks the
   * browser cookie, redeems the code with the PKCE verifier, and stores the user's tokens. A
   * provider that refuses the code is a `400`; one that cannot be reached, times out or answers
   * `5xx`/`429` is a `503` (`upstream_unavailable`) that ends the attempt: the state is spent
   * either way, and the user needs a new connect link.
   */
  async completeCallback(
    callbackUrl: URL,
    browser: string | undefined,
    auditRefusal: () => Promise<boolean> = async () => true,
  ): Promise<{ connectorId: string; user: VerifiedUser }> {
    const state = callbackUrl.searchParams.get('state');
    if (!state) throw new ConnectedAccountError('link_invalid', 'the callback has no state', 400);
    const { rows } = await this.pool.query<{
      id: string;
      connector_id: string;
      user_issuer: string;
      user_subject: string;
      browser_hash: string;
      verifier_sealed: Buffer;
    }>(
      `UPDATE connect_links SET used_at = now()
        WHERE state_hash = $1 AND used_at IS NULL AND expires_at > now()
        RETURNING id, connector_id, user_issuer, user_subject, browser_hash, verifier_sealed`,
      [sha256(state)],
    );
    const link = rows[0];
    if (!link) {
      if (await auditRefusal())
        await this.audit.record(
          this.event('connection.connect_failed', 'denied', { type: 'anonymous' }, null, null, { reason: 'unknown, used or expired state' }),
        );
      throw new ConnectedAccountError('link_invalid', 'this connect attempt is unknown, already used or expired: ask for a new link', 400);
    }
    const user = { issuer: link.user_issuer, subject: link.user_subject };
    if (!browser || !sameHash(sha256(browser), link.browser_hash)) {
      await this.audit.record(
        this.event('connection.connect_failed', 'denied', { type: 'anonymous' }, link.connector_id, user, { reason: 'browser_mismatch' }),
      );
      throw new ConnectedAccountError('browser_mismatch', 'this connect attempt was started in another browser: open the connect link again', 400);
    }
    const { credential, sealed: credentialSealed } = await this.sealedCredentialOf(link.connector_id);
    const verifier = this.master.unseal(link.verifier_sealed, `writ/connect-link/v1\n${link.id}`).toString('utf8');
    let tokens: UpstreamTokenSet;
    try {
      tokens = await this.client.exchangeCode(credential, { callbackUrl, redirectUri: this.callbackUrl, state, codeVerifier: verifier });
    } catch (error) {
      const failure = error instanceof UpstreamOAuthError ? error : new UpstreamOAuthError('invalid_response', 'the code could not be redeemed', false);
      await this.audit.record(
        this.event('connection.connect_failed', failure.refused ? 'failure' : 'error', { type: 'anonymous' }, link.connector_id, user, {
          error: failure.code,
          error_description: failure.message,
          ...(failure.refused ? {} : { retry: 'new_link' }),
        }),
      );
      if (failure.refused) throw new ConnectedAccountError('connect_failed', `the provider did not connect the account: ${failure.message}`, 400);
      // The provider's outage is not the user's fault (503), but the attempt is over: the code
      // may have been redeemed before the answer was lost, and a code sent twice is a replay
      // the provider should answer by revoking what it issued (RFC 6749 section 4.1.2). As
      // Keycloak's and Auth0's brokers do, the user starts again, with a new connect link.
      throw new ConnectedAccountError(
        'upstream_unavailable',
        'the provider could not be reached to finish connecting the account, and nothing was connected. ' +
          'This connect link is used up: ask for a new connect link and try again in a little while',
        503,
      );
    }
    const sealed = this.seal(link.connector_id, credential, user, {
      access_token: tokens.accessToken,
      ...(tokens.refreshToken ? { refresh_token: tokens.refreshToken } : {}),
    });
    // Stored only while the connector exists with the credential the code was redeemed with
    // (key-share locked, so a removal or change in flight is waited for and seen): the connector
    // may have been removed while the code was being redeemed, or given other destinations (which
    // removes the connections made under the previous ones: these tokens would be sent there).
    const { result: stored } = await this.audit.recordWith(
      async (tx) =>
        (
          await tx.query(
            `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, access_expires_at)
             SELECT $1::uuid, id, $3::text, $4::text, 'active', $5::text[], $6::bytea, $7::timestamptz FROM connectors
              WHERE id = $2 AND credential_sealed = $8::bytea FOR KEY SHARE
             ON CONFLICT (connector_id, user_issuer, user_subject) DO UPDATE
               SET status = 'active', scopes = EXCLUDED.scopes, tokens_sealed = EXCLUDED.tokens_sealed, access_expires_at = EXCLUDED.access_expires_at,
                   broken_error = NULL, connected_at = now(), refreshed_at = NULL, updated_at = now(),
                   refresh_lease_holder = NULL, refresh_lease_expires_at = NULL, forced_refreshed_at = NULL,
                   refresh_failures = 0, refresh_retry_at = NULL`,
            [randomUUID(), link.connector_id, user.issuer, user.subject, tokens.scopes, sealed, tokens.expiresAt, credentialSealed],
          )
        ).rowCount === 1,
      (inserted) =>
        inserted
          ? [
              this.event('connection.connected', 'success', { type: 'anonymous' }, link.connector_id, user, {
                scopes: tokens.scopes,
                refresh_token: tokens.refreshToken !== undefined,
                access_expires_at: tokens.expiresAt?.toISOString() ?? null,
              }),
            ]
          : [],
    );
    if (!stored) {
      // The provider granted tokens nobody will hold: revoke them there, as the removal would have.
      let revocation = 'revoked';
      try {
        await this.client.revoke(credential, tokens.refreshToken ?? tokens.accessToken, tokens.refreshToken ? 'refresh_token' : 'access_token');
      } catch (error) {
        revocation = error instanceof UpstreamOAuthError ? error.message : 'the upstream revocation failed';
      }
      const exists = ((await this.pool.query('SELECT 1 FROM connectors WHERE id = $1', [link.connector_id])).rowCount ?? 0) > 0;
      await this.audit.record(
        this.event('connection.connect_failed', 'failure', { type: 'anonymous' }, link.connector_id, user, {
          reason: exists ? 'connector credential changed' : 'connector deleted',
          upstream_revocation: revocation,
        }),
      );
      if (exists) {
        throw new ConnectedAccountError(
          'connector_changed',
          `the credential of connector ${link.connector_id} changed while the account was being connected, and nothing was connected: ask for a new connect link`,
          400,
        );
      }
      throw new ConnectedAccountError('not_found', `no connector ${link.connector_id}`, 404);
    }
    return { connectorId: link.connector_id, user };
  }

  /** Deletes connect links expired for more than a day (their sealed PKCE verifiers with them). */
  async purgeExpiredLinks(): Promise<number> {
    const { rowCount } = await this.pool.query(`DELETE FROM connect_links WHERE expires_at < now() - interval '1 day'`);
    return rowCount ?? 0;
  }

  /**
   * The access token of `user` on a connector, refreshed when it is (about to be) expired or,
   * with `rejected`, when the upstream just refused that token. Refresh is single-flight: in
   * this process one refresh per account at a time, which concurrent callers share; across
   * instances a lease on the account row (see {@link refreshLeased}), never a row lock held
   * across the upstream call. A token due for its refresh but not expired (more than
   * {@link STILL_USABLE_SECONDS} left) and not `rejected` is used as it is when the refresh
   * fails transiently or is backing off, or when there is no refresh token to refresh it with:
   * only an expired (or refused, or revoked) token fails the call, and without a refresh token
   * it breaks the connection.
   */
  async accessToken(connectorId: string, credential: OAuth2AuthorizationCode, user: VerifiedUser, rejected?: string): Promise<AccountAccessToken> {
    const row = this.usable(await this.readAccount(connectorId, user), connectorId);
    const tokens = this.open(row, credential, user);
    if (tokens.access_token !== rejected && !this.expiring(row)) return { token: tokens.access_token };
    // An unrefreshed token is counted by the gateway once the call is sent with it (a call may be checked twice, or refused after).
    return this.refreshShared(connectorId, credential, user, rejected);
  }

  /**
   * Joins the refresh of this account already running in this process, or starts one. A call
   * whose rejected token is what the joined refresh brought (it was refused meanwhile) starts
   * the next one, or joins it if another call already did.
   */
  private async refreshShared(connectorId: string, credential: OAuth2AuthorizationCode, user: VerifiedUser, rejected?: string): Promise<AccountAccessToken> {
    const key = `${connectorId}\u0000${credential.token_url}\u0000${user.issuer}\u0000${user.subject}`;
    const running = this.refreshing.get(key);
    if (running) {
      // Its failure is this call's answer: the call started the same refresh a moment later.
      const used = await running;
      if (used.token !== rejected) return used;
      const next = this.refreshing.get(key);
      if (next && next !== running) return next;
    }
    const flight = this.refreshLeased(connectorId, credential, user, rejected).finally(() => {
      if (this.refreshing.get(key) === flight) this.refreshing.delete(key);
    });
    this.refreshing.set(key, flight);
    return flight;
  }

  /**
   * Refresh single-flight across instances, with no transaction open across the upstream call:
   * one conditional UPDATE claims the account's refresh lease (free, or expired: its holder is
   * presumed dead and taken over), the provider is called, and the new tokens are stored only
   * if this attempt still holds the lease on the same, still active account. A caller that
   * finds a live lease uses the current access token while it is valid, or waits (polling with
   * backoff, {@link REFRESH_WAIT_MS} at most) for the holder's tokens; the holder's failure to
   * reach the provider is the waiters' 503 too, never a second refresh on their part. Whatever
   * stops the refresh for now (a live lease, the backoff, the provider's transient failure), a
   * current token that is not `rejected` and has more than {@link STILL_USABLE_SECONDS} left
   * is used for the call. So is such a token of a connection without a refresh token, whose
   * expiry (or refusal) breaks the connection instead (see {@link markUnrefreshable}).
   */
  private async refreshLeased(connectorId: string, credential: OAuth2AuthorizationCode, user: VerifiedUser, rejected?: string): Promise<AccountAccessToken> {
    const holder = randomUUID();
    const deadline = Date.now() + REFRESH_WAIT_MS;
    let pause = REFRESH_POLL_FIRST_MS;
    let waitedOn: string | null = null;
    for (;;) {
      const row = this.usable(await this.readAccount(connectorId, user), connectorId);
      const tokens = this.open(row, credential, user);
      if (tokens.access_token !== rejected && !this.expiring(row)) return { token: tokens.access_token };
      const usableMeanwhile = tokens.access_token !== rejected && row.access_valid;
      if (!tokens.refresh_token) {
        // Nothing to refresh with (the provider issued no refresh token): the token is used until
        // it expires (more than STILL_USABLE_SECONDS left) or the upstream refuses it; then the
        // user must connect again. Decided, and marked, in one statement by PostgreSQL's clock.
        if (usableMeanwhile) return { token: tokens.access_token };
        await this.markUnrefreshable(row, user, tokens.access_token === rejected);
        // Not marked: the connection changed since it was read (broken by another caller, or
        // connected again): read again, and answer as it is now.
        if (Date.now() < deadline) continue;
        throw new ConnectedAccountError('upstream_unavailable', 'the connection changed while it was being read: try again', 503);
      }
      // Asked for only because the upstream refused the token (it is not expiring): at most one
      // such refresh per MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS, by PostgreSQL's clock (the claim
      // checks it again, atomically). An upstream refusing every token would otherwise make each
      // call a refresh, and a refresh-token rotation written. A refusal after a refresh on expiry
      // (the provider revoked that token meanwhile) is still worth one at once.
      const forced = tokens.access_token === rejected && !this.expiring(row);
      if (forced && !row.lease_live && row.refresh_wait > 0) throw this.refreshTooSoon(row);
      if (row.lease_live) {
        // Another caller (maybe on another instance) is refreshing: never a second refresh.
        if (usableMeanwhile) return { token: tokens.access_token };
        waitedOn = row.lease_holder;
      } else if (row.retry_wait > 0) {
        // The last attempt (maybe the one waited for) failed transiently: the provider is not
        // asked again before its backoff is over (the claim checks it again, atomically).
        if (usableMeanwhile) return { token: tokens.access_token, unrefreshed: 'deferred' };
        // Counted by the gateway where the call's refusal is final (a call may be checked twice).
        throw this.refreshBackingOff(row);
      } else if (waitedOn !== null && row.lease_holder === null) {
        // The refresh waited for ended without new tokens, and not in a broken connection: the provider was unavailable.
        if (usableMeanwhile) return { token: tokens.access_token, unrefreshed: 'failed' };
        throw new ConnectedAccountError('upstream_unavailable', 'the upstream token endpoint is unavailable: the refresh in progress failed', 503);
      } else {
        const claimed = await this.claimLease(row, holder, forced);
        if (claimed) return this.refreshHeld(claimed, holder, credential, user, row.lease_holder !== null, rejected);
        // The row changed between the read and the claim (a refresh stored, a lease taken): read it again.
        if (Date.now() < deadline) continue;
      }
      if (Date.now() >= deadline) {
        throw new ConnectedAccountError('upstream_unavailable', 'a refresh of this connection is still in progress: try again shortly', 503);
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, REFRESH_POLL_MAX_MS);
    }
  }

  /** The account of `user` on a connector with its lease as PostgreSQL's clock sees it. */
  private async readAccount(connectorId: string, user: VerifiedUser): Promise<LeasedAccountRow | undefined> {
    const { rows } = await this.pool.query<LeasedAccountRow>(
      `SELECT ${ACCOUNT_COLUMNS}, ${LEASE_COLUMNS} FROM connected_accounts WHERE connector_id = $1 AND user_issuer = $2 AND user_subject = $3`,
      [connectorId, user.issuer, user.subject],
    );
    return rows[0];
  }

  /**
   * Claims the refresh lease of the account read as `row`, in one statement: only if the lease
   * is free or expired and the tokens are still the ones read (no refresh stored since); when
   * `forced` (by an upstream `401`), only if the last forced claim is
   * {@link MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS} old, and recording this one whatever its
   * outcome (a provider failing such refreshes is not asked again on every call either); and
   * never before the backoff after a transient failure is over (`refresh_retry_at`).
   */
  private async claimLease(row: LeasedAccountRow, holder: string, forced: boolean): Promise<LeasedAccountRow | undefined> {
    const { rows } = await this.pool.query<LeasedAccountRow>(
      `UPDATE connected_accounts SET refresh_lease_holder = $2, refresh_lease_expires_at = now() + make_interval(secs => $3),
              forced_refreshed_at = CASE WHEN $5::boolean THEN now() ELSE forced_refreshed_at END
        WHERE id = $1 AND status = 'active' AND tokens_sealed = $4 AND (refresh_lease_holder IS NULL OR refresh_lease_expires_at <= now())
          AND (NOT $5::boolean OR forced_refreshed_at IS NULL OR forced_refreshed_at <= now() - make_interval(secs => $6))
          AND (refresh_retry_at IS NULL OR refresh_retry_at <= now())
        RETURNING ${ACCOUNT_COLUMNS}, ${LEASE_COLUMNS}`,
      [row.id, holder, REFRESH_LEASE_SECONDS, row.tokens_sealed, forced, MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS],
    );
    return rows[0];
  }

  /** The upstream refused the token again within the interval of the last forced refresh: not refreshed before it is over. */
  private refreshTooSoon(row: LeasedAccountRow): ConnectedAccountError {
    return new ConnectedAccountError(
      'upstream_token_refused',
      `the upstream refused the user's access token on ${row.connector_id} again, less than ${MIN_UPSTREAM_REFRESH_INTERVAL_SECONDS} s after a refresh it forced: it is not refreshed again before then`,
      503,
      Math.max(1, row.refresh_wait, row.retry_wait),
    );
  }

  /**
   * The last refresh failed transiently, less than its backoff ago: the provider is not asked
   * again before it is over. Code `refresh_backoff` is only this refusal, made without asking
   * the provider (what `writ_account_refresh_deferred_total` counts, once per call, in the gateway).
   */
  private refreshBackingOff(row: LeasedAccountRow): ConnectedAccountError {
    return new ConnectedAccountError(
      'refresh_backoff',
      `the upstream token endpoint of ${row.connector_id} was unavailable at the last ${row.refresh_failures > 1 ? `${row.refresh_failures} refreshes` : 'refresh'} of the user's connection: ` +
        `it is not asked again for ${row.retry_wait} s`,
      503,
      Math.max(1, row.retry_wait),
    );
  }

  /**
   * Releases the lease of an attempt that failed transiently, if `holder` still has it, and
   * starts (or lengthens) the account's backoff in the same statement, by PostgreSQL's clock:
   * {@link upstreamBackoffSeconds} (libs/connectors) for the failures in a row counted in that
   * statement (the schedule's entry for it, one jitter draw); or, when the provider answered
   * `Retry-After` (`upstreamWait`, already capped at {@link MAX_UPSTREAM_RETRY_AFTER_SECONDS}),
   * the later of the two. Resolves with the failures in a row, the seconds of backoff, and
   * whether the connection still holds the tokens `sealed` (active) with an access token that
   * has more than {@link STILL_USABLE_SECONDS} left; or undefined when the lease was no longer
   * this attempt's (nothing written).
   */
  private async releaseAfterFailure(
    id: string,
    holder: string,
    sealed: Buffer,
    upstreamWait?: number,
  ): Promise<{ failures: number; retryAfter: number; usable: boolean } | undefined> {
    const { rows } = await this.pool.query<{ failures: number; retry_after: number; usable: boolean }>(
      `UPDATE connected_accounts SET refresh_lease_holder = NULL, refresh_lease_expires_at = NULL, refresh_failures = refresh_failures + 1,
              refresh_retry_at = now() + make_interval(secs => GREATEST(
                ($3::float8[])[LEAST(refresh_failures, $4::int - 1) + 1],
                LEAST(COALESCE($5::float8, 0), $6::float8)))
        WHERE id = $1 AND refresh_lease_holder = $2
        RETURNING refresh_failures AS failures, GREATEST(1, ceil(extract(epoch FROM refresh_retry_at - now())))::int AS retry_after,
                  (status = 'active' AND tokens_sealed = $7
                   AND (access_expires_at IS NULL OR access_expires_at > now() + make_interval(secs => $8))) AS usable`,
      [
        id,
        holder,
        upstreamBackoffSchedule(Math.random()),
        UPSTREAM_BACKOFF_STEPS,
        upstreamWait ?? null,
        MAX_UPSTREAM_RETRY_AFTER_SECONDS,
        sealed,
        STILL_USABLE_SECONDS,
      ],
    );
    return rows[0] ? { failures: rows[0].failures, retryAfter: rows[0].retry_after, usable: rows[0].usable } : undefined;
  }

  /**
   * The refresh itself, by the lease's holder; no transaction is open during the upstream call.
   * When the provider fails transiently and the current access token (not `rejected`) is still
   * usable, checked in the statement that releases the lease, the call goes with it.
   */
  private async refreshHeld(
    row: LeasedAccountRow,
    holder: string,
    credential: OAuth2AuthorizationCode,
    user: VerifiedUser,
    takenOver: boolean,
    rejected: string | undefined,
  ): Promise<AccountAccessToken> {
    const tokens = this.open(row, credential, user);
    // Not reached (the lease is claimed only for tokens read with a refresh token, see
    // refreshLeased); without one there is nothing to refresh with: fail closed.
    if (!tokens.refresh_token) return this.markBroken(row, holder, user, 'expired and no refresh token was issued');
    let fresh: UpstreamTokenSet;
    try {
      fresh = await this.client.refresh(credential, tokens.refresh_token, row.scopes);
    } catch (error) {
      if (error instanceof UpstreamOAuthError && error.refused) return this.markBroken(row, holder, user, error.message);
      const reason = error instanceof UpstreamOAuthError ? error.message : 'the upstream token endpoint could not be reached';
      // The lease released and the backoff started together: no other caller claims a refresh
      // before the backoff is over. Unreleased (the database out of reach too), the lease
      // expires by itself (REFRESH_LEASE_SECONDS, a backoff of its own).
      // A provider's Retry-After (429/503) is heeded as well: the later of the two waits.
      const upstreamWait = error instanceof UpstreamOAuthError ? error.retryAfterSeconds : undefined;
      const backoff = await this.releaseAfterFailure(row.id, holder, row.tokens_sealed, upstreamWait).catch(() => undefined);
      // The token this refresh was for has not expired (by PostgreSQL's clock, on the same active
      // connection, in the statement that released the lease) and the upstream did not refuse
      // it: the call, and those sharing this attempt, go with it. Unreleased (PostgreSQL out of
      // reach too), nothing is known of the connection now: 503.
      const current = backoff?.usable === true && tokens.access_token !== rejected;
      // One event per attempt: the calls refused during the backoff are counted, not audited.
      await this.audit.record(
        this.event('connection.refresh_failed', 'error', REFRESHER, row.connector_id, user, {
          connection_id: row.id,
          error: reason,
          status: row.status,
          ...(backoff ? { consecutive_failures: backoff.failures, retry_after_seconds: backoff.retryAfter } : {}),
          ...(upstreamWait !== undefined ? { upstream_retry_after_seconds: upstreamWait } : {}),
          ...(current ? { current_token_used: true } : {}),
        }),
      );
      if (current) return { token: tokens.access_token, unrefreshed: 'failed' };
      throw new ConnectedAccountError('upstream_unavailable', `the upstream token endpoint is unavailable: ${reason}`, 503, backoff?.retryAfter);
    }
    const rotated = fresh.refreshToken !== undefined && fresh.refreshToken !== tokens.refresh_token;
    const sealed = this.seal(row.connector_id, credential, user, {
      access_token: fresh.accessToken,
      refresh_token: fresh.refreshToken ?? tokens.refresh_token,
    });
    // Stored, with its event, only while this attempt holds the lease on the same active account:
    // a disconnect, a reconnect or a takeover during the upstream call wins.
    const store = async () =>
      (
        await this.audit.recordWith(
          async (tx) =>
            (
              await tx.query(
                `UPDATE connected_accounts SET tokens_sealed = $3, access_expires_at = $4, scopes = $5, refreshes = refreshes + 1, refreshed_at = now(), updated_at = now(),
                        refresh_lease_holder = NULL, refresh_lease_expires_at = NULL, refresh_failures = 0, refresh_retry_at = NULL
                  WHERE id = $1 AND refresh_lease_holder = $2 AND status = 'active' AND tokens_sealed = $6`,
                [row.id, holder, sealed, fresh.expiresAt, fresh.scopes, row.tokens_sealed],
              )
            ).rowCount === 1,
          (updated) =>
            updated
              ? [
                  this.event('connection.refreshed', 'success', REFRESHER, row.connector_id, user, {
                    connection_id: row.id,
                    rotated,
                    access_expires_at: fresh.expiresAt?.toISOString() ?? null,
                    ...(takenOver ? { lease_taken_over: true } : {}),
                  }),
                ]
              : [],
        )
      ).result;
    let stored: boolean;
    try {
      stored = await store();
    } catch (error) {
      // The provider has moved the grant on to the rotated refresh token: without it the
      // connection breaks at its next refresh. Keep trying to store it while the lease lasts.
      if (rotated && unavailable(error)) void this.keepStoring(row, holder, sealed, store, () => this.discard(row, credential, user, fresh));
      throw error;
    }
    if (stored) return { token: fresh.accessToken };
    return this.discard(row, credential, user, fresh);
  }

  /**
   * After PostgreSQL failed to store a refresh whose answer rotated the refresh token (the caller
   * was answered 503): tries again, backing off, for as long as the lease lasts, while this
   * attempt still holds the lease. A store whose commit did land (its answer lost) is seen
   * holding the sealed tokens and not written twice; one that finds the connection changed
   * meanwhile is discarded as during the upstream call. Waiters on the lease (any instance) see
   * the tokens as soon as they are stored.
   */
  private async keepStoring(
    row: LeasedAccountRow,
    holder: string,
    sealed: Buffer,
    store: () => Promise<boolean>,
    discard: () => Promise<never>,
  ): Promise<void> {
    const until = Date.now() + REFRESH_LEASE_SECONDS * 1000;
    for (let pause = STORE_RETRY_FIRST_MS; Date.now() < until; pause = Math.min(pause * 2, STORE_RETRY_MAX_MS)) {
      await new Promise((resolve) => setTimeout(resolve, pause).unref());
      if ((this.pool as Pool & { ending?: boolean }).ending) return;
      try {
        const { rows } = await this.pool.query<{ stored: boolean; held: boolean }>(
          `SELECT tokens_sealed = $2 AS stored, refresh_lease_holder IS NOT DISTINCT FROM $3 AS held FROM connected_accounts WHERE id = $1`,
          [row.id, sealed, holder],
        );
        if (rows[0]?.stored || (rows[0] && !rows[0].held)) return;
        if (!rows[0] || !(await store())) await discard().catch(() => undefined);
        return;
      } catch (error) {
        if (!unavailable(error)) return;
      }
    }
  }

  /**
   * Tokens refreshed for an account that was disconnected, reconnected or whose lease was taken
   * over during the upstream call are never stored. Disconnected: they are revoked at the
   * provider (the disconnect revoked the grant it knew of, not these) and the call is refused
   * as disconnected. Reconnected or taken over: nothing is revoked, since providers that revoke
   * every token of a user and client together would end the grant the account holds now (as
   * connecting again does not revoke the previous grant); the call is a 503, to be retried.
   */
  private async discard(row: LeasedAccountRow, credential: OAuth2AuthorizationCode, user: VerifiedUser, fresh: UpstreamTokenSet): Promise<never> {
    const current = await this.readAccount(row.connector_id, user);
    const reconnected = current !== undefined && (current.id !== row.id || current.connected_at.getTime() !== row.connected_at.getTime());
    let revocation = 'not revoked: the account holds another refresh or connection now';
    if (!current) {
      revocation = 'revoked';
      try {
        await this.client.revoke(credential, fresh.refreshToken ?? fresh.accessToken, fresh.refreshToken ? 'refresh_token' : 'access_token');
      } catch (error) {
        revocation = error instanceof UpstreamOAuthError ? error.message : 'the upstream revocation failed';
      }
    }
    await this.audit.record(
      this.event('connection.refresh_discarded', current ? 'info' : 'denied', REFRESHER, row.connector_id, user, {
        connection_id: row.id,
        reason: !current ? 'disconnected during the refresh' : reconnected ? 'reconnected during the refresh' : 'the refresh lease was taken over',
        upstream_revocation: revocation,
      }),
    );
    if (!current) throw this.noConnection(row.connector_id);
    this.usable(current, row.connector_id);
    throw new ConnectedAccountError('upstream_unavailable', 'the connection changed during its refresh: try again', 503);
  }

  /**
   * A connection without a refresh token whose access token has expired (
   * {@link STILL_USABLE_SECONDS} or less left) or was `refused` by the upstream (`401`): marked
   * broken, with its event, in one statement that checks the expiry by PostgreSQL's clock on
   * the same, still active connection holding the tokens read; then the call is refused. Of
   * parallel calls on every instance exactly one marks it (the others find it broken). Resolves
   * (nothing written) when the connection changed since it was read.
   */
  private async markUnrefreshable(row: LeasedAccountRow, user: VerifiedUser, refused: boolean): Promise<void> {
    const error = refused ? 'the upstream refused the access token and no refresh token was issued' : 'expired and no refresh token was issued';
    await this.breakIf(
      row,
      user,
      error,
      `status = 'active' AND tokens_sealed = $3
         AND ($4::boolean OR (access_expires_at IS NOT NULL AND access_expires_at <= now() + make_interval(secs => $5)))`,
      [row.tokens_sealed, refused, STILL_USABLE_SECONDS],
    );
  }

  /**
   * Marks the connection broken, with its `connection.refresh_failed` event, if it still meets
   * `condition` (SQL over its row, whose parameters start at `$3`), and then refuses the call;
   * resolves (nothing written) when it no longer does.
   */
  private async breakIf(row: LeasedAccountRow, user: VerifiedUser, error: string, condition: string, values: unknown[]): Promise<void> {
    const { result: marked } = await this.audit.recordWith(
      async (tx) =>
        (
          await tx.query(
            `UPDATE connected_accounts SET status = 'broken', broken_error = $2, refresh_lease_holder = NULL, refresh_lease_expires_at = NULL, updated_at = now()
              WHERE id = $1 AND ${condition}`,
            [row.id, error, ...values],
          )
        ).rowCount === 1,
      (updated) =>
        updated
          ? [this.event('connection.refresh_failed', 'failure', REFRESHER, row.connector_id, user, { connection_id: row.id, error, status: 'broken' })]
          : [],
    );
    if (marked) {
      throw new ConnectedAccountError('connection_broken', `the user's connection to ${row.connector_id} is broken (${error}): the user must connect again`);
    }
  }

  /**
   * The provider refused the refresh (or there is nothing to refresh with): the account is
   * marked broken, if this attempt still holds its lease (else another attempt or a disconnect
   * got there first, and this refusal says nothing about the account as it is now).
   */
  private async markBroken(row: LeasedAccountRow, holder: string, user: VerifiedUser, error: string): Promise<never> {
    await this.breakIf(row, user, error, `refresh_lease_holder = $3 AND status = 'active'`, [holder]);
    const current = await this.readAccount(row.connector_id, user);
    if (!current) throw this.noConnection(row.connector_id);
    this.usable(current, row.connector_id);
    throw new ConnectedAccountError('upstream_unavailable', 'the connection changed during its refresh: try again', 503);
  }

  /**
   * A page of connections, newest first (`connected_at` descending, then `id`), filtered by user
   * and/or connector, after the position `page.after` (the `next` of the previous page). Keyset
   * paging: a connection made or renewed while a caller pages sorts before the pages already
   * read, so it never shifts the older ones (none is read twice or skipped). The position is
   * `connected_at` to the microsecond, as PostgreSQL keeps it: a millisecond one would skip the
   * rows connected later within the same millisecond.
   */
  async list(
    filter: { user?: VerifiedUser; connectorId?: string },
    page: { limit: number; after?: ConnectionPosition },
  ): Promise<{ items: ConnectionView[]; next: ConnectionPosition | null }> {
    const { rows } = await this.pool.query<AccountRow & { position_at: string }>(
      `SELECT ${ACCOUNT_COLUMNS}, ${positionInstantSql('connected_at')} AS position_at FROM connected_accounts
        WHERE ($1::text IS NULL OR user_issuer = $1) AND ($2::text IS NULL OR user_subject = $2) AND ($3::text IS NULL OR connector_id = $3)
          AND ($4::timestamptz IS NULL OR connected_at < $4::timestamptz OR (connected_at = $4::timestamptz AND id > $5::uuid))
        ORDER BY connected_at DESC, id LIMIT $6`,
      [
        filter.user?.issuer ?? null,
        filter.user?.subject ?? null,
        filter.connectorId ?? null,
        page.after?.connectedAt ?? null,
        page.after?.id ?? null,
        page.limit + 1,
      ],
    );
    const last = rows.length > page.limit ? rows[page.limit - 1] : undefined;
    return { items: rows.slice(0, page.limit).map(view), next: last ? { connectedAt: last.position_at, id: last.id } : null };
  }

  /**
   * Removes a connection (of `owner` only, when given) and revokes its grant at the upstream
   * (RFC 7009, the refresh token; else the access token). The local removal stands whatever the
   * upstream answers; the revocation result is its own audit event.
   */
  async disconnect(id: string, actor: ConnectionActor, owner?: VerifiedUser): Promise<ConnectionView & { upstream_revocation: string }> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) throw new ConnectedAccountError('not_found', 'no such connection', 404);
    const { result: removed } = await this.audit.recordWith(
      async (tx) => {
        const { rows } = await tx.query<AccountRow>(
          `DELETE FROM connected_accounts WHERE id = $1 AND ($2::text IS NULL OR (user_issuer = $2 AND user_subject = $3)) RETURNING ${ACCOUNT_COLUMNS}`,
          [id, owner?.issuer ?? null, owner?.subject ?? null],
        );
        const row = rows[0];
        if (!row) return undefined;
        // The credential the tokens were granted under, read in the removal's transaction: read
        // after its commit, it could be one set meanwhile (its change no longer finds this
        // connection to remove), and the tokens would be revoked at, i.e. sent to, its revocation_url.
        // One that cannot be used is reported as the revocation's result; a database error fails the removal.
        const credential = await this.credentialOf(row.connector_id, tx).then(
          (value) => ({ value }),
          (error: unknown) => {
            if (error instanceof ConnectedAccountError || error instanceof UnsealError) return { error };
            throw error;
          },
        );
        return { row, credential };
      },
      (outcome) =>
        outcome
          ? [
              this.event(
                'connection.disconnected',
                'success',
                actor,
                outcome.row.connector_id,
                { issuer: outcome.row.user_issuer, subject: outcome.row.user_subject },
                { connection_id: outcome.row.id },
              ),
            ]
          : [],
    );
    if (!removed) throw new ConnectedAccountError('not_found', 'no such connection', 404);
    const { row, credential } = removed;
    const [revocation] = await this.revokeUpstream([row], actor, () =>
      'value' in credential ? Promise.resolve(credential.value) : Promise.reject(credential.error),
    );
    return { ...view(row), upstream_revocation: revocation };
  }

  /**
   * Part of a connector's removal, in its transaction `tx` (before the connector row goes):
   * deletes every user's connection to it, with a `connection.disconnected` event each (the
   * caller records them in the same transaction), and opens the connector's credential while it
   * still exists. `revokeUpstream`, called once the removal committed, revokes each user's grant
   * at the upstream (RFC 7009) and audits each result: a removed connector leaves no user's
   * token valid at the provider without a record of it.
   */
  async removeForConnector(
    tx: PoolClient,
    connectorId: string,
    actor: ConnectionActor,
    reason: string,
  ): Promise<{ removed: number; events: AuditEventInput[]; revokeUpstream: () => Promise<void> }> {
    const { rows } = await tx.query<AccountRow>(`DELETE FROM connected_accounts WHERE connector_id = $1 RETURNING ${ACCOUNT_COLUMNS}`, [connectorId]);
    if (rows.length === 0) return { removed: 0, events: [], revokeUpstream: async () => undefined };
    // Read in the removal's transaction, queued before its DELETE of the connector: on the pool it
    // could run after that commit and find no connector, and no user's grant would be revoked.
    const credential = this.credentialOf(connectorId, tx);
    // Settled here so that a connector without a usable credential is reported per connection, not thrown.
    credential.catch(() => undefined);
    const events = rows.map((row) =>
      this.event(
        'connection.disconnected',
        'success',
        actor,
        connectorId,
        { issuer: row.user_issuer, subject: row.user_subject },
        { connection_id: row.id, reason },
      ),
    );
    return { removed: rows.length, events, revokeUpstream: async () => void (await this.revokeUpstream(rows, actor, () => credential)) };
  }

  /**
   * Revokes removed connections' grants at the upstream, a few at a time, and records each
   * result (`connection.upstream_revoked`); resolves with the results in order.
   */
  private async revokeUpstream(rows: AccountRow[], actor: ConnectionActor, credentialOf: () => Promise<OAuth2AuthorizationCode>): Promise<string[]> {
    const results: string[] = new Array<string>(rows.length);
    let next = 0;
    const revokeNext = async (): Promise<void> => {
      while (next < rows.length) {
        const index = next++;
        const row = rows[index];
        const user = { issuer: row.user_issuer, subject: row.user_subject };
        let outcome: AuditEventInput['outcome'] = 'success';
        try {
          const credential = await credentialOf();
          const tokens = this.open(row, credential, user);
          await this.client.revoke(credential, tokens.refresh_token ?? tokens.access_token, tokens.refresh_token ? 'refresh_token' : 'access_token');
          results[index] = 'revoked';
        } catch (error) {
          outcome = 'failure';
          results[index] = error instanceof UpstreamOAuthError || error instanceof ConnectedAccountError ? error.message : 'the upstream revocation failed';
        }
        await this.audit.record(
          this.event('connection.upstream_revoked', outcome, actor, row.connector_id, user, { connection_id: row.id, result: results[index] }),
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(UPSTREAM_REVOCATIONS_AT_ONCE, rows.length) }, revokeNext));
    return results;
  }

  private usable<R extends AccountRow>(row: R | undefined, connectorId: string): R {
    if (!row) throw this.noConnection(connectorId);
    if (row.status !== 'active') {
      throw new ConnectedAccountError(
        'connection_broken',
        `the user's connection to ${connectorId} is broken (${row.broken_error ?? 'unknown error'}): the user must connect again`,
      );
    }
    return row;
  }

  private noConnection(connectorId: string): ConnectedAccountError {
    return new ConnectedAccountError('no_connection', `the task's user has not connected an account on ${connectorId}: issue them a connect link`);
  }

  private expiring(row: AccountRow): boolean {
    return row.access_expires_at !== null && row.access_expires_at.getTime() - EXPIRY_MARGIN_MS <= Date.now();
  }

  private open(row: AccountRow, credential: OAuth2AuthorizationCode, user: VerifiedUser): SealedTokens {
    try {
      return JSON.parse(
        this.master.unseal(row.tokens_sealed, accountSealContext(row.connector_id, credential.token_url, user)).toString('utf8'),
      ) as SealedTokens;
    } catch {
      throw new ConnectedAccountError(
        'connection_broken',
        `the user's connection to ${row.connector_id} does not open for its current token_url or user: the user must connect again`,
      );
    }
  }

  private seal(connectorId: string, credential: OAuth2AuthorizationCode, user: VerifiedUser, tokens: SealedTokens): Buffer {
    return this.master.seal(JSON.stringify(tokens), accountSealContext(connectorId, credential.token_url, user));
  }

  /**
   * Re-seals under the current master key the PKCE verifiers of open connect links sealed under
   * a previous one, in batches; one conditional UPDATE per row, applied only while the row still
   * holds the value read.
   */
  async rewrapConnectLinks(control: RewrapControl = UNCONTROLLED): Promise<RewrapCount> {
    return rewrapInBatches<{ id: string; verifier_sealed: Buffer }>(
      this.pool,
      this.master.currentSealPrefix(),
      { table: 'connect_links', key: 'id', column: 'verifier_sealed', where: 'verifier_sealed IS NOT NULL' },
      async (row) => {
        const context = `writ/connect-link/v1\n${row.id}`;
        const resealed = this.master.resealUnderCurrent(row.verifier_sealed, context);
        if (!resealed) return 'current';
        const updated = await this.pool.query('UPDATE connect_links SET verifier_sealed = $3 WHERE id = $1 AND verifier_sealed = $2', [
          row.id,
          row.verifier_sealed,
          resealed.sealed,
        ]);
        return updated.rowCount === 1 ? 'rewrapped' : 'skipped';
      },
      control,
    );
  }

  /**
   * Re-seals under the current master key the users' tokens sealed under a previous one, as
   * {@link rewrapConnectLinks} does, and never under a live refresh lease (the refresh stores its
   * rotation by comparing the sealed value it read: the row is left for the next start).
   */
  async rewrapConnectedAccounts(control: RewrapControl = UNCONTROLLED): Promise<RewrapCount> {
    return rewrapInBatches<{ id: string; connector_id: string; user_issuer: string; user_subject: string; tokens_sealed: Buffer }>(
      this.pool,
      this.master.currentSealPrefix(),
      { table: 'connected_accounts', key: 'id', column: 'tokens_sealed', columns: ['connector_id', 'user_issuer', 'user_subject'] },
      async (row) => {
        let credential: OAuth2AuthorizationCode;
        try {
          credential = await this.credentialOf(row.connector_id);
        } catch (error) {
          // No credential to derive the context from (removed, another type, or it does not open).
          if (error instanceof ConnectedAccountError || error instanceof UnsealError) throw new UnsealError();
          throw error;
        }
        const context = accountSealContext(row.connector_id, credential.token_url, { issuer: row.user_issuer, subject: row.user_subject });
        const resealed = this.master.resealUnderCurrent(row.tokens_sealed, context);
        if (!resealed) return 'current';
        const updated = await this.pool.query(
          `UPDATE connected_accounts SET tokens_sealed = $3
            WHERE id = $1 AND tokens_sealed = $2 AND (refresh_lease_holder IS NULL OR refresh_lease_expires_at <= now())`,
          [row.id, row.tokens_sealed, resealed.sealed],
        );
        return updated.rowCount === 1 ? 'rewrapped' : 'skipped';
      },
      control,
    );
  }

  /**
   * The connector's `oauth2_authorization_code` credential, opened for its current destination;
   * read in `db` (a transaction, to see the row it is about to delete; the pool otherwise).
   */
  async credentialOf(connectorId: string, db: Pool | PoolClient = this.pool): Promise<OAuth2AuthorizationCode> {
    return (await this.sealedCredentialOf(connectorId, db)).credential;
  }

  /** {@link credentialOf}, with the sealed value it was opened from (to store only while it is still the connector's). */
  private async sealedCredentialOf(connectorId: string, db: Pool | PoolClient = this.pool): Promise<{ credential: OAuth2AuthorizationCode; sealed: Buffer }> {
    const { rows } = await db.query<ConnectorCredentialRow>('SELECT id, base_url, credential_type, credential_sealed FROM connectors WHERE id = $1', [
      connectorId,
    ]);
    const row = rows[0];
    if (!row) throw new ConnectedAccountError('not_found', `no connector ${connectorId}`, 404);
    if (row.credential_type !== 'oauth2_authorization_code' || !row.credential_sealed) {
      throw new ConnectedAccountError(
        'not_authorization_code',
        `connector ${connectorId} does not use per-user connected accounts (credential type oauth2_authorization_code)`,
        400,
      );
    }
    const credential = unsealCredential(this.master, row.id, row.base_url, row.credential_sealed);
    if (credential.type !== 'oauth2_authorization_code')
      throw new ConnectedAccountError('not_authorization_code', `connector ${connectorId} does not use connected accounts`, 400);
    return { credential, sealed: row.credential_sealed };
  }

  private event(
    type: string,
    outcome: AuditEventInput['outcome'],
    actor: ConnectionActor,
    connectorId: string | null,
    user: VerifiedUser | null,
    data: Record<string, unknown>,
  ): AuditEventInput {
    return { type, outcome, actor, connectorId, data: { ...(user ? { user: { iss: user.issuer, sub: user.subject } } : {}), ...data } };
  }
}

function view(row: AccountRow): ConnectionView {
  return {
    id: row.id,
    connector_id: row.connector_id,
    user: { iss: row.user_issuer, sub: row.user_subject },
    status: row.status,
    scopes: row.scopes,
    broken_error: row.broken_error,
    access_expires_at: row.access_expires_at?.toISOString() ?? null,
    connected_at: row.connected_at.toISOString(),
    refreshed_at: row.refreshed_at?.toISOString() ?? null,
  };
}
