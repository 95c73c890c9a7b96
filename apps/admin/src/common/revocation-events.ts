import type { AuditEventInput } from '@writ/audit';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';

/**
 * The `token.revoked` event of credentials an admin change revoked (none: no event), to be
 * recorded in the transaction that revoked them.
 */
export function tokensRevokedEvents(
  principal: AdminPrincipal,
  jtis: string[],
  reason: string,
  scope: { agentId?: string | null; connectorId?: string | null },
): AuditEventInput[] {
  if (jtis.length === 0) return [];
  return [{ type: 'token.revoked', outcome: 'success', actor: adminActor(principal), ...scope, data: { reason, jtis, count: jtis.length } }];
}
