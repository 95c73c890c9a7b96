import { createParamDecorator, ExecutionContext } from '@nestjs/common';
import type { AdminRole } from './admin-role';

/** The admin token a request is made with (never the token itself). */
export interface AdminPrincipal {
  /** The `admin_tokens.id`: the actor id of every audit event the request causes. */
  id: string;
  name: string;
  role: AdminRole;
}

/** Request property where the guard leaves the principal. */
export const ADMIN_PRINCIPAL = 'writAdmin';

/** Injects the request's {@link AdminPrincipal} into a controller method. */
export const CurrentAdmin = createParamDecorator((_data: unknown, context: ExecutionContext): AdminPrincipal => {
  const request = context.switchToHttp().getRequest<{ [ADMIN_PRINCIPAL]?: AdminPrincipal }>();
  const principal = request[ADMIN_PRINCIPAL];
  // The guard always runs first; reaching here without it is a wiring bug, not a client error.
  if (!principal) throw new Error('admin principal missing: is the controller guarded?');
  return principal;
});

/** The audit actor of an admin change. */
export function adminActor(principal: AdminPrincipal): { type: 'admin'; id: string } {
  return { type: 'admin', id: principal.id };
}
