import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import { randomBytes, randomUUID } from 'node:crypto';
import type { PoolClient } from 'pg';
import { AuditEventInput, AuditService } from '@writ/audit';
import { RowIntegrity } from '@writ/grants';
import { AdminTokenEntity, rowOf, RowOf } from '@writ/database';
import { ConflictError, hashAdminToken, isIsoInstant, isUuid, NotFoundError } from '@writ/platform';
import { AdminUnauthorizedError } from '../auth/admin-auth.errors';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { decodeCursor, encodeCursor, Page } from '../common/cursor';
import { AdminIdempotency, idempotent, type IdempotencyClaim, type IdempotentRequest } from '../common/idempotency';
import { DEFAULT_PAGE_SIZE, PageQueryDto } from '../common/page-query.dto';
import { AdminTokenDto, CreatedAdminTokenDto, toAdminTokenDto } from './dto/admin-token.dto';
import type { CreateAdminTokenDto } from './dto/create-admin-token.dto';

/** Prefix of admin tokens, so that secret scanners recognise them. */
export const ADMIN_TOKEN_PREFIX = 'writ_admin_';

const COLUMNS = 'id, name, role, created_by, created_at, last_used_at, revoked_at, expires_at';

/** SQL: the row's token has not expired (`expires_at` NULL: it never does). */
const UNEXPIRED = '(expires_at IS NULL OR expires_at > now())';
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
        const inside = await client.query<{ inside: boolean }>(REVOKER_INSIDE_SQL, [principal.id, id]);
        if (inside.rows[0].inside) throw new ConflictError(REVOKER_INSIDE);
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

/** What one revocation revoked: the token itself (false: it was revoked before) and its descendants. */
interface Revocation {
  root: boolean;
  descendants: string[];
}

/**
 * Most descendants one `admin.admin_token.revoked` event lists, as `token.revoked` lists at most
 * this many jtis: a larger tree is recorded as consecutive events of the same transaction, each
 * with a part of the list, so no single event grows with the tree.
 */
export const REVOKED_ADMIN_TOKENS_PER_EVENT = 500;

/**
 * SQL: whether token `$1` (the revoker) is token `$2` or descends from it, walking up
 * `created_by` (a creator id that is not a UUID, `system`, ends the walk; so does one whose row is
 * gone). `UNION` stops at a row seen before: a loop written into `created_by` by hand ends too.
 */
const REVOKER_INSIDE_SQL = `
  WITH RECURSIVE lineage (id, created_by) AS (
    SELECT id, created_by FROM admin_tokens WHERE id = $1
    UNION
    SELECT parent.id, parent.created_by FROM admin_tokens parent JOIN lineage
        ON parent.id = CASE WHEN lineage.created_by ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN lineage.created_by::uuid END
  )
  SELECT EXISTS (SELECT 1 FROM lineage WHERE id = $2) AS inside`;

const REVOKER_INSIDE =
  'revoking this admin token would also revoke the token making the request, which it created (directly or not): use an admin token outside its tree';

/**
 * SQL: revokes token `$1` and every token descended from it through `created_by` that is not
 * revoked yet, walking down through revoked and expired tokens too (a child outlives neither).
 * A creator whose row is gone simply has no row to walk from; `UNION` ends a loop written by hand.
 */
const REVOKE_TREE_SQL = `
  WITH RECURSIVE tree (id) AS (
    SELECT $1::uuid
    UNION
    SELECT child.id FROM admin_tokens child JOIN tree ON child.created_by = tree.id::text
  )
  UPDATE admin_tokens token SET revoked_at = now() FROM tree
   WHERE token.id = tree.id AND token.revoked_at IS NULL
  RETURNING token.id, token.created_at`;

/**
 * Revokes the tree of `id` (see {@link REVOKE_TREE_SQL}), again until a walk revokes nothing: its
 * statement reads the tokens committed when it began, so a child committed by a creation that held
 * its creator's row (`FOR SHARE`) until then is found by the next walk; a creation that asks for
 * its creator's row once this transaction has revoked it waits for the commit, then finds it
 * revoked and creates nothing (`401`). (Audited transactions also run one at a time, under the
 * audit chain head's lock, so the second walk normally finds nothing: the loop does not depend on
 * it.) The tokens revoked, in creation order.
 */
async function revokeTree(client: PoolClient, id: string): Promise<Array<{ id: string; created_at: Date }>> {
  const revoked: Array<{ id: string; created_at: Date }> = [];
  for (;;) {
    const { rows } = await client.query<{ id: string; created_at: Date }>(REVOKE_TREE_SQL, [id]);
    if (rows.length === 0) break;
    revoked.push(...rows);
  }
  return revoked.sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * The `admin.admin_token.revoked` events of one revocation: `id` the token revoked, `descendants`
 * the ids of the tokens revoked with it (creation order; never a token or its hash) and
 * `descendant_count`; split into consecutive events of at most
 * {@link REVOKED_ADMIN_TOKENS_PER_EVENT} descendants, with `part` (1-based) and `parts`, when there
 * are more. `already_revoked: true` when the token itself was revoked before (only descendants left
 * live by an earlier release were revoked now).
 */
export function revokedEvents(principal: AdminPrincipal, id: string, revocation: Revocation): AuditEventInput[] {
  const { descendants } = revocation;
  const parts = Math.max(1, Math.ceil(descendants.length / REVOKED_ADMIN_TOKENS_PER_EVENT));
  return Array.from({ length: parts }, (_, index) => ({
    type: 'admin.admin_token.revoked',
    outcome: 'success' as const,
    actor: adminActor(principal),
    data: {
      id,
      descendants: descendants.slice(index * REVOKED_ADMIN_TOKENS_PER_EVENT, (index + 1) * REVOKED_ADMIN_TOKENS_PER_EVENT),
      descendant_count: descendants.length,
      ...(revocation.root ? {} : { already_revoked: true }),
      ...(parts > 1 ? { part: index + 1, parts } : {}),
    },
  }));
}
