import type { AuditEventInput } from '@writ/audit';
import { tokenRevokedEvents } from '@writ/grants';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';

/**
 * The `token.revoked` events of credentials an admin change revoked (none: no event; many: split
 * as {@link tokenRevokedEvents} says), to be recorded in the transaction that revoked them.
 */
export function tokensRevokedEvents(
  principal: AdminPrincipal,
  jtis: string[],
  reason: string,
  scope: { agentId?: string | null; connectorId?: string | null },
): AuditEventInput[] {
  return tokenRevokedEvents({ actor: adminActor(principal), ...scope }, jtis, reason);
}
