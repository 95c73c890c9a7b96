import { CallHandler, ExecutionContext, Injectable, NestInterceptor } from '@nestjs/common';
import type { Request } from 'express';
import { catchError, from, mergeMap, type Observable, throwError } from 'rxjs';
import { OrchestratorBearerGuard } from './orchestrator-bearer.guard';

/**
 * A Tasks API handler that refuses the bearer token itself (task creation checks the token and
 * the orchestrator again at its commit: revoked or suspended meanwhile is `401 invalid_token`)
 * has that refusal counted toward the failed-authentication throttle as the guard's own are, so
 * that no refusal of a token escapes the limit (`429` with `Retry-After` past it). Runs after
 * the guard: the guard's refusals never reach it, and are counted once.
 */
@Injectable()
export class TokenRefusalInterceptor implements NestInterceptor {
  constructor(private readonly guard: OrchestratorBearerGuard) {}

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const request = context.switchToHttp().getRequest<Request>();
    return next.handle().pipe(catchError((error: unknown) => from(this.guard.countRefusal(request, error)).pipe(mergeMap(() => throwError(() => error)))));
  }
}
