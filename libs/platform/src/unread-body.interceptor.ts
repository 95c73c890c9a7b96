import { CallHandler, ExecutionContext, Injectable, NestInterceptor } from '@nestjs/common';
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum';
import type { Request } from 'express';
import type { Observable } from 'rxjs';
import { ValidationFailedError } from './http-exception.filter';

/** True for a parsed JSON body with content (a non-empty object or array); `{}`, `[]`, raw bytes and no body are not. */
function hasParsedContent(body: unknown): boolean {
  if (body === null || typeof body !== 'object' || Buffer.isBuffer(body)) return false;
  return Array.isArray(body) ? body.length > 0 : Object.keys(body).length > 0;
}

/** True when the handler reads its body (`@Body()`): Nest keeps its parameters on the controller class, keyed `type:index`. */
function readsBody(controller: object, handler: string): boolean {
  const args = (Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, handler) ?? {}) as Record<string, unknown>;
  return Object.keys(args).some((key) => key.split(':')[0] === String(RouteParamtypes.BODY));
}

/**
 * A JSON body sent to an endpoint that takes none (`DELETE /v1/agents/{id}` with
 * `{"reason": ...}`, `POST /v1/keys/rotate` with options) is a `400` naming `body`, never
 * ignored: nothing the caller sent is dropped silently. Runs after the guards (an
 * unauthenticated call is a 401 first). Raw bodies (the OAuth endpoints' forms) are their
 * handlers' own.
 */
@Injectable()
export class UnreadBodyInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() === 'http') {
      const request = context.switchToHttp().getRequest<Request>();
      if (hasParsedContent(request.body) && !readsBody(context.getClass(), context.getHandler().name)) {
        throw new ValidationFailedError([{ field: 'body', message: 'this endpoint takes no body' }], 'the request body is invalid');
      }
    }
    return next.handle();
  }
}
