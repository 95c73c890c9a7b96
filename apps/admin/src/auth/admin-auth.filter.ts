import { ArgumentsHost, Catch, ExceptionFilter } from '@nestjs/common';
import type { Response } from 'express';
import { AdminForbiddenError, AdminThrottledError, AdminUnauthorizedError } from './admin-auth.errors';

/** The challenge of the admin API (RFC 6750 section 3). */
export const ADMIN_CHALLENGE = 'Bearer realm="writ"';

/**
 * Answers the admin guard's refusals in the admin API's error shape; every other exception
 * falls through to the platform's filter.
 */
@Catch(AdminUnauthorizedError, AdminForbiddenError, AdminThrottledError)
export class AdminAuthErrorFilter implements ExceptionFilter {
  catch(exception: AdminUnauthorizedError | AdminForbiddenError | AdminThrottledError, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<Response>();
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
}
