import type { PoolClient } from 'pg';
import { AdminUnauthorizedError } from './admin-auth.errors';
import type { AdminPrincipal } from './admin-principal';

/**
 * An admin change's transaction work, run only while the admin token that asked for it is still
 * neither revoked nor expired: `401`, and nothing changed, otherwise. Before its transaction a
 * change may wait on what its caller controls (a host name's resolution, a candidate policy's trial
 * run) or on a busy table, long after the token was authenticated. Every audited change runs
 * under the audit chain head's lock, a revocation included: one that committed before this
 * transaction began is seen here, one that commits later commits after this change.
 */
export function adminChange<T>(principal: AdminPrincipal, work: (tx: PoolClient) => Promise<T>): (tx: PoolClient) => Promise<T> {
  return async (tx) => {
    const { rowCount } = await tx.query('SELECT 1 FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())', [
      principal.id,
    ]);
    if (!rowCount) throw new AdminUnauthorizedError('the admin token is unknown or revoked');
    return work(tx);
  };
}
