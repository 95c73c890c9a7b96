import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import { randomBytes, randomUUID } from 'node:crypto';
import { AuditService } from '@writ/audit';
import { RowIntegrity } from '@writ/grants';
import { AdminTokenEntity, rowOf, RowOf } from '@writ/database';
import { ConflictError, hashAdminToken, isIsoInstant, isUuid, NotFoundError } from '@writ/platform';
import { AdminUnauthorizedError } from '../auth/admin-auth.errors';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { decodeCursor, encodeCursor, Page } from '../common/cursor';
import { AdminIdempotency, idempotent, type IdempotencyClaim, type IdempotentRequest } from '../common/idempotency';
import { DEFAULT_PAGE_SIZE, PageQueryDto } from '../common/page-query.dto';
import { isInTree, type Revocation, revokedEvents, revokeTree } from './admin-token-tree';
import { AdminTokenDto, CreatedAdminTokenDto, toAdminTokenDto } from './dto/admin-token.dto';
import type { CreateAdminTokenDto } from './dto/create-admin-token.dto';

/** Prefix of admin tokens, so that secret scanners recognise them. */
export const ADMIN_TOKEN_PREFIX = 'writ_admin_';

const COLUMNS = 'id, name, role, created_by, created_at, last_used_at, revoked_at, expires_at';

/** SQL: the row's token has not expired (`expires_at` NULL: it never does). */
const UNEXPIRED = '(expires_at IS NULL OR expires_at > now())';
/** The `409` of a revocation whose tree holds the token making the request. */
const REVOKER_INSIDE =
  'revoking this admin token would also revoke the token making the request, which it created (directly or not): use an admin token outside its tree';
/** The `401` of a request whose own admin token was revoked (or expired) while it ran. */
const REVOKED_MEANWHILE = 'the admin token is unknown or revoked';
/** A row as {@link COLUMNS} selects it. */
type Row = Omit<RowOf<AdminTokenEntity>, 'token_hash'>;

function isTimeCursor(value: unknown): value is { t: string; i: string } {
  const cursor = value as { t?: unknown; i?: unknown } | null;
  return isIsoInstant(cursor?.t) && isUuid(cursor?.i);
}

/** The answer to a token's creation without the token: what a replay under its `Idempotency-Key` gives. */
function createdWithoutToken(created: AdminTokenDto): Omit<CreatedAdminTokenDto, 'token'> {
  return { id: created.id, name: created.name, role: created.role, created_at: created.created_at, expires_at: created.expires_at };
}

/** Creates, lists and revokes admin tokens; a token is shown once and stored as its SHA-256. */
@Injectable()
export class AdminTokensService {
  constructor(
    @InjectRepository(AdminTokenEntity) private readonly repository: Repository<AdminTokenEntity>,
    private readonly audit: AuditService,
    private readonly integrity: RowIntegrity,
    private readonly idempotency: AdminIdempotency,
  ) {}

  /**
   * Creates a token: 32 random bytes, base64url, after the `writ_admin_` prefix. Once per
   * `Idempotency-Key` (see {@link AdminIdempotency}); a replay answers the token's id, name, role
   * and times without `token`: the token is shown once and kept only as its hash (never sealed
   * for a replay), so a caller that lost the first answer revokes that id and creates another.
   */
  create(
    principal: AdminPrincipal,
    body: CreateAdminTokenDto,
    request?: IdempotentRequest,
  ): Promise<CreatedAdminTokenDto | Omit<CreatedAdminTokenDto, 'token'>> {
    return this.idempotency.run(request, (claim) => this.mint(principal, body, claim));
  }

  private async mint(principal: AdminPrincipal, body: CreateAdminTokenDto, claim: IdempotencyClaim | undefined): Promise<CreatedAdminTokenDto> {
    const token = `${ADMIN_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const id = randomUUID();
    const { result } = await this.audit.recordWith(
      idempotent(
        claim,
        async (client) => {
          // The creator's token row, share-locked: a revocation of it waits for this creation, or
          // this creation (authenticated before the revocation committed) sees it and creates nothing.
          // Its expiry bounds the new token's: read again here, so verified again (a DBA could
          // lift it after the request authenticated, and Writ would tag a child outliving it).
          const creator = await client.query<{ role: string; token_hash: string; expires_at: Date | null; integrity_tag: string | null }>(
            `SELECT role, token_hash, expires_at, integrity_tag FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL AND ${UNEXPIRED} FOR SHARE`,
            [principal.id],
          );
          const held = creator.rows[0];
          if (
            !held ||
            !this.integrity.verifyAdminToken({ id: principal.id, role: held.role, tokenHash: held.token_hash, expiresAt: held.expires_at }, held.integrity_tag)
          ) {
            throw new AdminUnauthorizedError(REVOKED_MEANWHILE);
          }
          // Never past its creator's expiry (LEAST skips NULLs: no expiry only from a creator without
          // one), as Vault's child tokens: else a token leaked for a day would make one for ever.
          const tokenHash = hashAdminToken(token);
          const { rows } = await client.query<Row>(
            `INSERT INTO admin_tokens (id, name, role, token_hash, created_by, expires_at)
           VALUES ($1, $2, $3, $4, $5, LEAST(now() + make_interval(secs => $6::int), $7::timestamptz)) RETURNING ${COLUMNS}`,
            [id, body.name, body.role, tokenHash, principal.id, body.expires_in ?? null, held.expires_at],
          );
          // Tagged over the expiry PostgreSQL computed (read back to the millisecond, as verified).
          const tag = this.integrity.tagAdminToken({ id, role: body.role, tokenHash, expiresAt: rows[0].expires_at });
          await client.query('UPDATE admin_tokens SET integrity_tag = $2 WHERE id = $1', [id, tag]);
          return toAdminTokenDto(rows[0]);
        },
        createdWithoutToken,
      ),
      (created) => [
        {
          type: 'admin.admin_token.created',
          outcome: 'success',
          actor: adminActor(principal),
          data: { id: created.id, name: created.name, role: created.role, expires_at: created.expires_at },
        },
      ],
    );
    const { id: createdId, name, role, created_at: createdAt, expires_at: expiresAt } = createdWithoutToken(result);
    return { id: createdId, name, role, token, created_at: createdAt, expires_at: expiresAt };
  }

  /** A page of tokens, newest first (revoked ones included, with `revoked_at`). */
  async list(query: PageQueryDto): Promise<Page<AdminTokenDto>> {
    const before = decodeCursor(query.cursor, isTimeCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    // Ordered by millisecond time so that a cursor carried as an ISO string compares exactly;
    // the hash is never selected.
    const select = (['id', 'name', 'role', 'createdBy', 'createdAt', 'lastUsedAt', 'revokedAt', 'expiresAt'] as const).map((property) => `token.${property}`);
    const found = this.repository
      .createQueryBuilder('token')
      .select(select)
      .orderBy(`date_trunc('milliseconds', token.created_at)`, 'DESC')
      .addOrderBy('token.id', 'DESC')
      .limit(limit + 1);
    if (before) found.where(`(date_trunc('milliseconds', token.created_at), token.id) < (:t::timestamptz, :i::uuid)`, { t: before.t, i: before.i });
    const rows: Row[] = (await found.getMany()).map((token) => rowOf(token));
    const items = rows.slice(0, limit).map(toAdminTokenDto);
    const last = items[items.length - 1];
    return { items, next_cursor: rows.length > limit ? encodeCursor({ t: last.created_at, i: last.id }) : null };
  }

  /**
   * Revokes a token and, in the same transaction, every token descended from it through
   * `created_by` (the tokens it created, theirs...), as Vault revokes a token's children with it:
   * a stolen token's holder keeps no access through the tokens they minted with it. `409` for the
   * token making the request, and for a token it descends from (revoking that tree would revoke
   * the request's own token: the last admin is never locked out by accident). Revoking a revoked
   * token again revokes the descendants still live (a tree left by a release that did not cascade),
   * and changes nothing else.
   */
  async revoke(principal: AdminPrincipal, id: string): Promise<void> {
    if (!isUuid(id)) throw new NotFoundError('admin token');
    if (id === principal.id) throw new ConflictError('an admin token cannot revoke itself: use another admin token');
    await this.audit.recordWith(
      async (client): Promise<Revocation | undefined> => {
        // Both rows, locked in id order: of two admins revoking each other at once, the second to
        // lock finds its own token revoked and changes nothing, so the last admin is never lost.
        const locked = await client.query<Pick<Row, 'id' | 'revoked_at'> & { expired: boolean }>(
          'SELECT id, revoked_at, (expires_at IS NOT NULL AND expires_at <= now()) AS expired FROM admin_tokens WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE',
          [[id, principal.id]],
        );
        const revoker = locked.rows.find((row) => row.id === principal.id);
        if (!revoker || revoker.revoked_at || revoker.expired) throw new AdminUnauthorizedError(REVOKED_MEANWHILE);
        const current = locked.rows.find((row) => row.id === id);
        if (!current) throw new NotFoundError('admin token');
        // Checked before anything is written: a token's ancestors never change (`created_by` is set
        // once, at its creation), so whether the revoker is in the tree cannot change meanwhile.
        if (await isInTree(client, principal.id, id)) throw new ConflictError(REVOKER_INSIDE);
        const revoked = await revokeTree(client, id);
        const root = revoked.some((row) => row.id === id);
        const descendants = revoked.filter((row) => row.id !== id).map((row) => row.id);
        if (!root && descendants.length === 0) return undefined;
        return { root, descendants };
      },
      (revocation) => (revocation ? revokedEvents(principal, id, revocation) : []),
    );
  }
}
