import type { PoolClient } from 'pg';
import type { AuditEventInput } from '@writ/audit';
import { type AdminPrincipal, adminActor } from '../auth/admin-principal';

// An admin token's tree: the tokens descended from it through `created_by` (the tokens it
// created, the tokens those created...), revoked with it as Vault revokes a token's children.

/** What one revocation revoked: the token itself (false: it was revoked before) and its descendants. */
export interface Revocation {
  root: boolean;
  /** Ids of the descendants revoked, in creation order. */
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
  RETURNING token.id, to_char(token.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS created`;

/** Whether the token `revokerId` is the token `id` or descends from it (revoking `id` would revoke it). */
export async function isInTree(client: PoolClient, revokerId: string, id: string): Promise<boolean> {
  const { rows } = await client.query<{ inside: boolean }>(REVOKER_INSIDE_SQL, [revokerId, id]);
  return rows[0].inside;
}

/**
 * Revokes the tree of `id` (see {@link REVOKE_TREE_SQL}), again until a walk revokes nothing: its
 * statement reads the tokens committed when it began, so a child committed by a creation that held
 * its creator's row (`FOR SHARE`) until then is found by the next walk; a creation that asks for
 * its creator's row once this transaction has revoked it waits for the commit, then finds it
 * revoked and creates nothing (`401`). (Audited transactions also run one at a time, under the
 * audit chain head's lock, so the second walk normally finds nothing: the loop does not depend on
 * it.) Returns the tokens revoked (with their creation time, UTC to the microsecond), in creation order.
 */
export async function revokeTree(client: PoolClient, id: string): Promise<Array<{ id: string; created: string }>> {
  const revoked: Array<{ id: string; created: string }> = [];
  for (;;) {
    const { rows } = await client.query<{ id: string; created: string }>(REVOKE_TREE_SQL, [id]);
    if (rows.length === 0) break;
    revoked.push(...rows);
  }
  // By creation time to the microsecond (a Date keeps milliseconds: tokens made within one would tie).
  const order = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return revoked.sort((a, b) => order(a.created, b.created) || order(a.id, b.id));
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
