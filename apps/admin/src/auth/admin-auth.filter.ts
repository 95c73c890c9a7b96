import { ArgumentsHost, Catch, ExceptionFilter } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { carriesBody } from '@writ/platform';
import { AdminForbiddenError, AdminThrottledError, AdminUnauthorizedError } from './admin-auth.errors';
import type { AdminAuthenticator } from './admin-authenticator';
import type { AdminPrincipal } from './admin-principal';
import { type AdminRole, roleSatisfies } from './admin-role';

/** The challenge of the admin API (RFC 6750 section 3). */
export const ADMIN_CHALLENGE = 'Bearer realm="writ"';

/** Answers a refusal of the admin token in the admin API's error shape. */
export function answerAdminAuthError(exception: AdminUnauthorizedError | AdminForbiddenError | AdminThrottledError, response: Response): void {
  response.setHeader('Cache-Control', 'no-store');
  response.setHeader('Pragma', 'no-cache');
  if (exception instanceof AdminThrottledError) {
    response.setHeader('Retry-After', String(exception.retryAfterSeconds));
    response.status(429).json({ error: 'too_many_requests', message: exception.message });
    return;
  }
  if (exception instanceof AdminUnauthorizedError) {
    response.setHeader('WWW-Authenticate', ADMIN_CHALLENGE);
    response.status(401).json({ error: 'unauthorized', message: exception.message });
    return;
  }
  response.status(403).json({ error: 'forbidden', message: exception.message });
}

/**
 * Answers the admin guard's refusals in the admin API's error shape; every other exception
 * falls through to the platform's filter.
 */
@Catch(AdminUnauthorizedError, AdminForbiddenError, AdminThrottledError)
export class AdminAuthErrorFilter implements ExceptionFilter {
  catch(exception: AdminUnauthorizedError | AdminForbiddenError | AdminThrottledError, host: ArgumentsHost): void {
    answerAdminAuthError(exception, host.switchToHttp().getResponse<Response>());
  }
}

/** Where {@link authenticateBeforeBody} leaves the principal, for {@link requireRoleBeforeBody} (the guard looks the token up again). */
const AUTHENTICATED_BEFORE_BODY = Symbol('writAdminAuthenticatedBeforeBody');
type BodyAuthenticated = { [AUTHENTICATED_BEFORE_BODY]?: AdminPrincipal };

/**
 * Authenticates the admin token of a request that carries a body before anything reads it:
 * without a known admin token the answer is `401` (or `429`) at once, and the connection is
 * closed rather than drained, so an unauthenticated caller cannot make the process buffer and
 * parse bodies. Every admin endpoint requires a token; the guard still checks the role.
 */
export function authenticateBeforeBody(authenticator: AdminAuthenticator) {
  return (req: Request & BodyAuthenticated, res: Response, next: NextFunction): void => {
    if (!carriesBody(req)) return next();
    authenticator.authenticate(req).then(
      (principal) => {
        req[AUTHENTICATED_BEFORE_BODY] = principal;
        next();
      },
      (error: unknown) => {
        if (!(error instanceof AdminUnauthorizedError || error instanceof AdminThrottledError)) return next(error);
        res.setHeader('Connection', 'close');
        answerAdminAuthError(error, res);
      },
    );
  };
}

/**
 * For an endpoint whose body is costly to take (a policy bundle: up to 8 MB, and only a few read
 * at once per process), refuses a token below `role` before the body is read: `403`, audited as the
 * guard's refusals are, connection closed. Otherwise a viewer's slow uploads would hold the upload
 * slots, and an admin's policy change would be turned away with `503`. Runs after
 * {@link authenticateBeforeBody}.
 */
export function requireRoleBeforeBody(authenticator: AdminAuthenticator, role: AdminRole) {
  return (req: Request & BodyAuthenticated, res: Response, next: NextFunction): void => {
    const principal = req[AUTHENTICATED_BEFORE_BODY];
    if (!carriesBody(req) || !principal || roleSatisfies(principal.role, role)) return next();
    authenticator.forbid(principal, role, { method: req.method, path: req.baseUrl + (req.path === '/' ? '' : req.path) }).catch((error: unknown) => {
      if (!(error instanceof AdminForbiddenError)) return next(error);
      res.setHeader('Connection', 'close');
      answerAdminAuthError(error, res);
    });
  };
}
