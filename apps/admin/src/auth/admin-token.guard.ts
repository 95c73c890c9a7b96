import { CanActivate, ExecutionContext, Injectable } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import type { Request } from 'express';
import { AdminAuthenticator } from './admin-authenticator';
import { ADMIN_PRINCIPAL, AdminPrincipal } from './admin-principal';
import { AdminRole, roleSatisfies } from './admin-role';
import { REQUIRED_ROLE } from './require-role.decorator';

/**
 * Authenticates the admin token ({@link AdminAuthenticator}; a request with a body was
 * authenticated before its body was read too, and is again here, once the body is in: a token
 * revoked or expired while a slow body arrived changes nothing) and checks the endpoint's role
 * (a refusal is audited, {@link AdminAuthenticator.forbid}).
 */
@Injectable()
export class AdminTokenGuard implements CanActivate {
  constructor(
    private readonly reflector: Reflector,
    private readonly authenticator: AdminAuthenticator,
  ) {}

  /** Attaches the principal, or refuses with 401 / 403 (429 for a source with too many failures). */
  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<Request & { [ADMIN_PRINCIPAL]?: AdminPrincipal }>();
    const principal = await this.authenticator.authenticate(request);
    const required = this.requiredRole(context, request.method);
    if (!roleSatisfies(principal.role, required)) await this.authenticator.forbid(principal, required, request);
    request[ADMIN_PRINCIPAL] = principal;
    return true;
  }

  private requiredRole(context: ExecutionContext, method: string): AdminRole {
    const declared = this.reflector.getAllAndOverride<AdminRole | undefined>(REQUIRED_ROLE, [context.getHandler(), context.getClass()]);
    if (declared) return declared;
    return method === 'GET' || method === 'HEAD' ? 'viewer' : 'admin';
  }
}
