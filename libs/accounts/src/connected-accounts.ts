import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import * as oauth from 'oauth4webapi';
import type { Pool, PoolClient } from 'pg';
import type { AuditEventInput, AuditService } from '@writ/audit';
import { watchCheckedOut } from '@writ/database';
import { type OAuth2AuthorizationCode, unsealCredential } from '@writ/connectors';
import type { MasterKey } from '@writ/keys';
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
/** An access token this close to its expiry is refreshed before use. */
const EXPIRY_MARGIN_MS = 30_000;
/** The cookie binding a connect attempt to the browser that opened the link. */
export const CONNECT_COOKIE = 'writ_connect';

/** Upstream revocations in flight at once when a connector's removal revokes every user's grant. */
const UPSTREAM_REVOCATIONS_AT_ONCE = 8;

const ACCOUNT_COLUMNS = `id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, access_expires_at, broken_error, connected_at, refreshed_at`;

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
 * upstream tokens sealed per (connector, user), refresh single-flight across instances (a row
 * lock around the upstream call, with rotation stored in the same transaction), `broken` when
 * the upstream refuses a refresh, and upstream revocation on disconnect. Every step is an
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

  /** Issues a one-time connect link for `user` on `connectorId`. */
  async createLink(connectorId: string, user: VerifiedUser, actor: ConnectionActor): Promise<ConnectLink> {
    await this.credentialOf(connectorId);
    const token = randomBytes(32).toString('base64url');
    const expiresAt = new Date(Date.now() + CONNECT_LINK_TTL_SECONDS * 1000);
    // Only while the connector exists (key-share locked, so a removal in flight is waited for
    // and seen): one removed since the read above is the same 404 as for a fresh request.
    const { result: issued } = await this.audit.recordWith(
      async (tx) =>
        (
          await tx.query(
            `INSERT INTO connect_links (id, connector_id, user_issuer, user_subject, created_by, expires_at)
             SELECT $1::text, id, $3::text, $4::text, $5::text, $6::timestamptz FROM connectors WHERE id = $2 FOR KEY SHARE`,
            [sha256(token), connectorId, user.issuer, user.subject, `${actor.type}:${actor.id ?? ''}`, expiresAt],
          )
        ).rowCount === 1,
      (inserted) => (inserted ? [this.event('connection.link_issued', 'success', actor, connectorId, user, { expires_at: expiresAt.toISOString() })] : []),
    );
    if (!issued) throw new ConnectedAccountError('not_found', `no connector ${connectorId}`, 404);
    return { url: `${this.linkBase}${token}`, expires_at: expiresAt.toISOString(), connector_id: connectorId, user: { iss: user.issuer, sub: user.subject } };
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
    if (!link) {
      // Anyone can guess at links: the caller counts refusals per source and says whether this one is still audited on its own.
      if (await auditRefusal())
        await this.audit.record(
          this.event('connection.link_refused', 'denied', { type: 'anonymous' }, null, null, { reason: 'unknown, used or expired link' }),
        );
      throw new ConnectedAccountError('link_invalid', 'this connect link is unknown, already used or expired: ask for a new one', 400);
    }
    const user = { issuer: link.user_issuer, subject: link.user_subject };
    const credential = await this.credentialOf(link.connector_id);
    const redirect = await this.client.authorizationUrl(credential, { redirectUri: this.callbackUrl, state, codeVerifier: verifier });
    await this.audit.record(this.event('connection.link_opened', 'info', { type: 'anonymous' }, link.connector_id, user, {}));
    return { redirect, browser };
  }

  /**
   * The provider's redirect back to Writ: finds the attempt by `state` (once), checks the
   * browser cookie, redeems the code with the PKCE verifier, and stores the user's tokens.
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
    const credential = await this.credentialOf(link.connector_id);
    const verifier = this.master.unseal(link.verifier_sealed, `writ/connect-link/v1\n${link.id}`).toString('utf8');
    let tokens: UpstreamTokenSet;
    try {
      tokens = await this.client.exchangeCode(credential, { callbackUrl, redirectUri: this.callbackUrl, state, codeVerifier: verifier });
    } catch (error) {
      const failure = error instanceof UpstreamOAuthError ? error : new UpstreamOAuthError('invalid_response', 'the code could not be redeemed', false);
      await this.audit.record(
        this.event('connection.connect_failed', 'failure', { type: 'anonymous' }, link.connector_id, user, {
          error: failure.code,
          error_description: failure.message,
        }),
      );
      throw new ConnectedAccountError('connect_failed', `the provider did not connect the account: ${failure.message}`, 400);
    }
    const sealed = this.seal(link.connector_id, credential, user, {
      access_token: tokens.accessToken,
      ...(tokens.refreshToken ? { refresh_token: tokens.refreshToken } : {}),
    });
    // Stored only while the connector exists (key-share locked, so a removal in flight is waited
    // for and seen): the connector may have been removed while the code was being redeemed.
    const { result: stored } = await this.audit.recordWith(
      async (tx) =>
        (
          await tx.query(
            `INSERT INTO connected_accounts (id, connector_id, user_issuer, user_subject, status, scopes, tokens_sealed, access_expires_at)
             SELECT $1::uuid, id, $3::text, $4::text, 'active', $5::text[], $6::bytea, $7::timestamptz FROM connectors WHERE id = $2 FOR KEY SHARE
             ON CONFLICT (connector_id, user_issuer, user_subject) DO UPDATE
               SET status = 'active', scopes = EXCLUDED.scopes, tokens_sealed = EXCLUDED.tokens_sealed, access_expires_at = EXCLUDED.access_expires_at,
                   broken_error = NULL, connected_at = now(), refreshed_at = NULL, updated_at = now()`,
            [randomUUID(), link.connector_id, user.issuer, user.subject, tokens.scopes, sealed, tokens.expiresAt],
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
      await this.audit.record(
        this.event('connection.connect_failed', 'failure', { type: 'anonymous' }, link.connector_id, user, {
          reason: 'connector deleted',
          upstream_revocation: revocation,
        }),
      );
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
   * with `rejected`, when the upstream just refused that token. Refresh is single-flight
   * across instances: the row is locked around the upstream call and re-read under the lock,
   * so a second caller uses the first one's fresh token.
   */
  async accessToken(connectorId: string, credential: OAuth2AuthorizationCode, user: VerifiedUser, rejected?: string): Promise<string> {
    const { rows } = await this.pool.query<AccountRow>(
      `SELECT ${ACCOUNT_COLUMNS} FROM connected_accounts WHERE connector_id = $1 AND user_issuer = $2 AND user_subject = $3`,
      [connectorId, user.issuer, user.subject],
    );
    const row = this.usable(rows[0], connectorId);
    const tokens = this.open(row, credential, user);
    if (tokens.access_token !== rejected && !this.expiring(row)) return tokens.access_token;
    return this.refreshLocked(connectorId, credential, user, rejected);
  }

  private async refreshLocked(connectorId: string, credential: OAuth2AuthorizationCode, user: VerifiedUser, rejected?: string): Promise<string> {
    const tx: PoolClient = await this.pool.connect();
    // Checked out across the upstream call: PostgreSQL may end this session meanwhile
    // (idle_in_transaction_session_timeout, a failover, pg_terminate_backend). Watched, that is
    // a failed query here (503 for this call), not an unhandled 'error' ending the process.
    const release = watchCheckedOut(tx);
    let failed = false;
    let outcome: { token: string; events: AuditEventInput[] } | { error: ConnectedAccountError; events: AuditEventInput[] };
    try {
      await tx.query('BEGIN');
      const { rows } = await tx.query<AccountRow>(
        `SELECT ${ACCOUNT_COLUMNS} FROM connected_accounts WHERE connector_id = $1 AND user_issuer = $2 AND user_subject = $3 FOR UPDATE`,
        [connectorId, user.issuer, user.subject],
      );
      const row = this.usable(rows[0], connectorId);
      const tokens = this.open(row, credential, user);
      if (tokens.access_token !== rejected && !this.expiring(row)) {
        // Another caller (maybe on another instance) refreshed while this one waited for the lock.
        await tx.query('COMMIT');
        return tokens.access_token;
      }
      outcome = await this.refreshRow(tx, row, credential, user, tokens);
      await tx.query('COMMIT');
    } catch (error) {
      failed = true;
      await tx.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      release(failed);
    }
    await this.audit.record(outcome.events);
    if ('error' in outcome) throw outcome.error;
    return outcome.token;
  }

  private async refreshRow(tx: PoolClient, row: AccountRow, credential: OAuth2AuthorizationCode, user: VerifiedUser, tokens: SealedTokens) {
    const system = { type: 'system' as const, id: 'connected-accounts' };
    const broken = async (error: string) => {
      await tx.query(`UPDATE connected_accounts SET status = 'broken', broken_error = $2, updated_at = now() WHERE id = $1`, [row.id, error]);
      return {
        error: new ConnectedAccountError('connection_broken', `the user's connection to ${row.connector_id} is broken (${error}): the user must connect again`),
        events: [this.event('connection.refresh_failed', 'failure', system, row.connector_id, user, { connection_id: row.id, error, status: 'broken' })],
      };
    };
    if (!tokens.refresh_token) return broken('expired and no refresh token was issued');
    let fresh: UpstreamTokenSet;
    try {
      fresh = await this.client.refresh(credential, tokens.refresh_token, row.scopes);
    } catch (error) {
      if (error instanceof UpstreamOAuthError && error.refused) return broken(error.message);
      const reason = error instanceof UpstreamOAuthError ? error.message : 'the upstream token endpoint could not be reached';
      await this.audit.record(
        this.event('connection.refresh_failed', 'error', system, row.connector_id, user, { connection_id: row.id, error: reason, status: row.status }),
      );
      throw new ConnectedAccountError('upstream_unavailable', `the upstream token endpoint is unavailable: ${reason}`, 503);
    }
    const rotated = fresh.refreshToken !== undefined && fresh.refreshToken !== tokens.refresh_token;
    const sealed = this.seal(row.connector_id, credential, user, {
      access_token: fresh.accessToken,
      refresh_token: fresh.refreshToken ?? tokens.refresh_token,
    });
    await tx.query(
      `UPDATE connected_accounts SET tokens_sealed = $2, access_expires_at = $3, scopes = $4, refreshes = refreshes + 1, refreshed_at = now(), updated_at = now()
        WHERE id = $1`,
      [row.id, sealed, fresh.expiresAt, fresh.scopes],
    );
    return {
      token: fresh.accessToken,
      events: [
        this.event('connection.refreshed', 'success', system, row.connector_id, user, {
          connection_id: row.id,
          rotated,
          access_expires_at: fresh.expiresAt?.toISOString() ?? null,
        }),
      ],
    };
  }

  /** Connections, newest first, optionally of one user or one connector. */
  async list(filter: { user?: VerifiedUser; connectorId?: string } = {}): Promise<ConnectionView[]> {
    const { rows } = await this.pool.query<AccountRow>(
      `SELECT ${ACCOUNT_COLUMNS} FROM connected_accounts
        WHERE ($1::text IS NULL OR user_issuer = $1) AND ($2::text IS NULL OR user_subject = $2) AND ($3::text IS NULL OR connector_id = $3)
        ORDER BY connected_at DESC, id LIMIT 500`,
      [filter.user?.issuer ?? null, filter.user?.subject ?? null, filter.connectorId ?? null],
    );
    return rows.map(view);
  }

  /**
   * Removes a connection (of `owner` only, when given) and revokes its grant at the upstream
   * (RFC 7009, the refresh token; else the access token). The local removal stands whatever the
   * upstream answers; the revocation result is its own audit event.
   */
  async disconnect(id: string, actor: ConnectionActor, owner?: VerifiedUser): Promise<ConnectionView & { upstream_revocation: string }> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) throw new ConnectedAccountError('not_found', 'no such connection', 404);
    const { result } = await this.audit.recordWith(
      async (tx) => {
        const { rows } = await tx.query<AccountRow>(
          `DELETE FROM connected_accounts WHERE id = $1 AND ($2::text IS NULL OR (user_issuer = $2 AND user_subject = $3)) RETURNING ${ACCOUNT_COLUMNS}`,
          [id, owner?.issuer ?? null, owner?.subject ?? null],
        );
        return rows[0];
      },
      (row) =>
        row
          ? [
              this.event(
                'connection.disconnected',
                'success',
                actor,
                row.connector_id,
                { issuer: row.user_issuer, subject: row.user_subject },
                { connection_id: row.id },
              ),
            ]
          : [],
    );
    if (!result) throw new ConnectedAccountError('not_found', 'no such connection', 404);
    const [revocation] = await this.revokeUpstream([result], actor, () => this.credentialOf(result.connector_id));
    return { ...view(result), upstream_revocation: revocation };
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

  private usable(row: AccountRow | undefined, connectorId: string): AccountRow {
    if (!row) throw new ConnectedAccountError('no_connection', `the task's user has not connected an account on ${connectorId}: issue them a connect link`);
    if (row.status !== 'active') {
      throw new ConnectedAccountError(
        'connection_broken',
        `the user's connection to ${connectorId} is broken (${row.broken_error ?? 'unknown error'}): the user must connect again`,
      );
    }
    return row;
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
   * The connector's `oauth2_authorization_code` credential, opened for its current destination;
   * read in `db` (a transaction, to see the row it is about to delete; the pool otherwise).
   */
  async credentialOf(connectorId: string, db: Pool | PoolClient = this.pool): Promise<OAuth2AuthorizationCode> {
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
    return credential;
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
