import { Inject, Injectable } from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import { AuditService } from '@writ/audit';
import { ConnectedAccountError, ConnectedAccounts, connectionCursorOf, type ConnectionView, type ConnectLink, isConnectionCursor } from '@writ/accounts';
import { WRIT_CONFIG, type WritConfig } from '@writ/config';
import { destinationRefusal, UpstreamNetworks } from '@writ/connectors';
import { PG_POOL } from '@writ/database';
import { RowIntegrity } from '@writ/grants';
import { ConflictError, FieldError, NotFoundError, requestTextProblem, ValidationFailedError } from '@writ/platform';
import { adminActor, type AdminPrincipal } from '../auth/admin-principal';
import { adminChange } from '../auth/admin-change';
import { decodeCursor, encodeCursor, Page } from '../common/cursor';
import { AdminIdempotency, idempotent, type IdempotencyClaim, type IdempotentRequest } from '../common/idempotency';
import { DEFAULT_PAGE_SIZE } from '../common/page-query.dto';
import type {
  ConnectionQueryDto,
  CreateAdminConnectLinkDto,
  CreateIdentityProviderDto,
  IdentityProviderDto,
  ListIdentityProvidersQueryDto,
} from './connection.dtos';

/** Shape check of an identity provider list cursor `{k: issuer}` (issuers are up to 2048 characters). */
function isIssuerCursor(value: unknown): value is { k: string } {
  const key = typeof value === 'object' && value !== null ? (value as { k?: unknown }).k : undefined;
  // Compared in SQL: no NUL or lone surrogate may reach the query.
  return typeof key === 'string' && key.length <= 2048 && requestTextProblem(key) === undefined;
}

interface IdentityProviderRow {
  issuer: string;
  jwks_uri: string;
  audience: string;
  asserting_orchestrators: string[];
  created_at: Date;
}

function urlProblem(value: string): string | undefined {
  try {
    const url = new URL(value);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an http(s) URL';
    if (url.username || url.password || url.hash) return 'must not carry userinfo or a fragment';
    return undefined;
  } catch {
    return 'must be an absolute http(s) URL';
  }
}

/**
 * An issuer URL in the form two spellings of one issuer share (WHATWG-normalised: scheme and host
 * case, default port, dot segments; no trailing slash), or the text itself when it is no URL.
 */
function sameIssuerForm(value: string): string {
  try {
    return new URL(value).href.replace(/\/+$/, '');
  } catch {
    return value;
  }
}

/** Trusted identity providers and users' connected accounts, for admins. */
@Injectable()
export class ConnectionsService {
  private readonly networks: UpstreamNetworks;
  /** Writ's own issuer, as {@link sameIssuerForm} writes it. */
  private readonly ownIssuer: string;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    private readonly accounts: ConnectedAccounts,
    @Inject(WRIT_CONFIG) config: WritConfig,
    private readonly idempotency: AdminIdempotency,
    private readonly integrity: RowIntegrity,
  ) {
    this.networks = new UpstreamNetworks(config.upstreamAllowedNetworks);
    this.ownIssuer = sameIssuerForm(config.issuer);
  }

  /**
   * Registers a trusted identity provider; its JWKS URI must pass the destination checks. Once per
   * `Idempotency-Key` (see {@link AdminIdempotency}).
   */
  createProvider(admin: AdminPrincipal, body: CreateIdentityProviderDto, request?: IdempotentRequest): Promise<IdentityProviderDto> {
    return this.idempotency.run(request, (claim) => this.registerProvider(admin, body, claim));
  }

  private async registerProvider(admin: AdminPrincipal, body: CreateIdentityProviderDto, claim: IdempotencyClaim | undefined): Promise<IdentityProviderDto> {
    const fields: FieldError[] = [];
    const issuerProblem =
      urlProblem(body.issuer) ??
      // Writ's own tokens (task tokens, credentials) are not a user's identity: trusted as a
      // provider, Writ's issuer would let a token it issued for one purpose name a user.
      (sameIssuerForm(body.issuer) === this.ownIssuer ? "is Writ's own issuer: the tokens Writ issues are not user identity tokens" : undefined);
    if (issuerProblem) fields.push({ field: 'issuer', message: issuerProblem });
    const jwksProblem = urlProblem(body.jwks_uri);
    if (jwksProblem) fields.push({ field: 'jwks_uri', message: jwksProblem });
    else {
      const refused = await destinationRefusal(body.jwks_uri, this.networks);
      if (refused) fields.push({ field: 'jwks_uri', message: `must not point at this destination: ${refused}` });
    }
    if (fields.length > 0) throw new ValidationFailedError(fields, 'the identity provider is invalid');
    const { result } = await this.audit.recordWith(
      idempotent(
        claim,
        adminChange(admin, async (tx) => {
          // Another spelling of a registered issuer (a trailing slash, the host's case, the default
          // port) names the same provider to a person reading the audit trail or writing a policy,
          // yet would be a second registration with keys of its own. Checked under the audit chain
          // head's lock that every admin change takes: two registrations never both pass it.
          const form = sameIssuerForm(body.issuer);
          const registered = await tx.query<{ issuer: string }>('SELECT issuer FROM identity_providers');
          const twin = registered.rows.find((row) => row.issuer !== body.issuer && sameIssuerForm(row.issuer) === form);
          if (twin) {
            throw new ConflictError(`an identity provider with this issuer, spelled ${JSON.stringify(twin.issuer.slice(0, 200))}, is already registered`);
          }
          const { rows } = await tx.query<IdentityProviderRow>(
            `INSERT INTO identity_providers (issuer, jwks_uri, audience, asserting_orchestrators, integrity_tag) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (issuer) DO NOTHING RETURNING issuer, jwks_uri, audience, asserting_orchestrators, created_at`,
            [
              body.issuer,
              body.jwks_uri,
              body.audience,
              body.asserting_orchestrators ?? [],
              // Tagged as written: the verifier of user tokens trusts only a provider Writ registered.
              this.integrity.tagIdentityProvider({
                issuer: body.issuer,
                jwksUri: body.jwks_uri,
                audience: body.audience,
                assertingOrchestrators: body.asserting_orchestrators ?? [],
              }),
            ],
          );
          // Thrown in the transaction: an Idempotency-Key taken for this request is given back.
          if (!rows[0]) throw new ConflictError('an identity provider with this issuer is already registered');
          return toProvider(rows[0]);
        }),
      ),
      (provider) => [
        {
          type: 'admin.identity_provider.created',
          outcome: 'success' as const,
          actor: adminActor(admin),
          data: {
            issuer: provider.issuer,
            jwks_uri: provider.jwks_uri,
            audience: provider.audience,
            asserting_orchestrators: provider.asserting_orchestrators,
          },
        },
      ],
    );
    return result;
  }

  /** Every trusted identity provider. */
  async listProviders(query: ListIdentityProvidersQueryDto): Promise<Page<IdentityProviderDto>> {
    const after = decodeCursor(query.cursor, isIssuerCursor, 4096);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const { rows } = await this.pool.query<IdentityProviderRow>(
      `SELECT issuer, jwks_uri, audience, asserting_orchestrators, created_at FROM identity_providers
        WHERE $1::text IS NULL OR issuer > $1 ORDER BY issuer LIMIT $2`,
      [after?.k ?? null, limit + 1],
    );
    const items = rows.slice(0, limit).map(toProvider);
    return { items, next_cursor: rows.length > limit ? encodeCursor({ k: items[items.length - 1].issuer }) : null };
  }

  /** Removes a trusted identity provider: its users' tokens are refused from then on (tasks already verified keep their user). */
  async removeProvider(admin: AdminPrincipal, issuer: string): Promise<void> {
    const { result } = await this.audit.recordWith(
      adminChange(admin, async (tx) => (await tx.query('DELETE FROM identity_providers WHERE issuer = $1', [issuer])).rowCount ?? 0),
      (count) => (count > 0 ? [{ type: 'admin.identity_provider.removed', outcome: 'success' as const, actor: adminActor(admin), data: { issuer } }] : []),
    );
    if (result === 0) throw new NotFoundError('identity provider');
  }

  /**
   * A page of connections (never tokens), newest first, filtered. The filters come from the query
   * on every page; the cursor is only a position within them.
   */
  async list(query: ConnectionQueryDto): Promise<Page<ConnectionView>> {
    if ((query.user_iss === undefined) !== (query.user_sub === undefined)) {
      throw new ValidationFailedError(
        [{ field: query.user_iss === undefined ? 'user_iss' : 'user_sub', message: 'user_iss and user_sub go together' }],
        'the query is invalid',
      );
    }
    const after = decodeCursor(query.cursor, isConnectionCursor);
    const user = query.user_iss !== undefined ? { issuer: query.user_iss, subject: query.user_sub! } : undefined;
    const page = await this.accounts.list(
      { user, connectorId: query.connector_id },
      { limit: query.limit ?? DEFAULT_PAGE_SIZE, after: after ? { connectedAt: after.c, id: after.i } : undefined },
    );
    return { items: page.items, next_cursor: page.next ? encodeCursor(connectionCursorOf(page.next)) : null };
  }

  /**
   * Issues a connect link for a user the admin names; once per `Idempotency-Key` (see
   * {@link AdminIdempotency}). A replay answers the link without its `url`: the URL carries the
   * link's secret, shown once and kept only hashed.
   */
  createLink(admin: AdminPrincipal, body: CreateAdminConnectLinkDto, request?: IdempotentRequest): Promise<ConnectLink | Omit<ConnectLink, 'url'>> {
    return this.idempotency.run(request, (claim) => this.issueLink(admin, body, claim));
  }

  private async issueLink(admin: AdminPrincipal, body: CreateAdminConnectLinkDto, claim: IdempotencyClaim | undefined): Promise<ConnectLink> {
    const { iss, sub, ...rest } = body.user;
    const fields: FieldError[] = Object.keys(rest).map((key) => ({ field: `user.${key}`, message: 'unknown field' }));
    if (typeof iss !== 'string' || iss.length === 0 || iss.length > 2048)
      fields.push({ field: 'user.iss', message: 'must be the issuer of a registered identity provider' });
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > 255) fields.push({ field: 'user.sub', message: 'must be 1 to 255 characters' });
    if (fields.length === 0) {
      const known = await this.pool.query('SELECT 1 FROM identity_providers WHERE issuer = $1', [iss]);
      if (known.rowCount === 0) fields.push({ field: 'user.iss', message: 'is not a registered identity provider' });
    }
    if (fields.length > 0) throw new ValidationFailedError(fields, 'the user is invalid');
    // The key is taken after the link's row, in its transaction: a link's id is random, so a
    // concurrent twin conflicts only on the key, and rolls its link back.
    const within = claim
      ? async (tx: PoolClient, issued: Omit<ConnectLink, 'url'>) => {
          await claim.take(tx);
          await claim.keep(tx, issued);
        }
      : undefined;
    return this.mapped(() => this.accounts.createLink(body.connector_id, { issuer: iss as string, subject: sub as string }, adminActor(admin), within));
  }

  /** Removes a connection and revokes it at the upstream. */
  disconnect(admin: AdminPrincipal, id: string): Promise<ConnectionView & { upstream_revocation: string }> {
    return this.mapped(() => this.accounts.disconnect(id, adminActor(admin)));
  }

  private async mapped<T>(step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      if (!(error instanceof ConnectedAccountError)) throw error;
      if (error.status === 404) throw new NotFoundError(error.code === 'not_found' && /connector/.test(error.message) ? 'connector' : 'connection');
      throw new ValidationFailedError([{ field: 'connector_id', message: error.message }], error.message);
    }
  }
}

function toProvider(row: IdentityProviderRow): IdentityProviderDto {
  return {
    issuer: row.issuer,
    jwks_uri: row.jwks_uri,
    audience: row.audience,
    asserting_orchestrators: row.asserting_orchestrators,
    created_at: row.created_at.toISOString(),
  };
}
