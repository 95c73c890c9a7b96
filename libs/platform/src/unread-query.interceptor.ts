import { CallHandler, ExecutionContext, Injectable, NestInterceptor } from '@nestjs/common';
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum';
import type { Request } from 'express';
import type { Observable } from 'rxjs';
import { OBJECT_PROTOTYPE_JSON_KEYS } from '@writ/oauth';
import { ValidationFailedError } from './http-exception.filter';

/**
 * The query members a handler reads: `'all'` when it takes the whole query (a DTO, which the
 * validation pipe checks member by member, unknown ones refused), else the names of its
 * `@Query('name')` parameters (none for a handler that reads no query).
 */
function queryMembersRead(controller: object, handler: string): 'all' | Set<string> {
  const args = (Reflect.getMetadata(ROUTE_ARGS_METADATA, controller, handler) ?? {}) as Record<string, { data?: unknown }>;
  const names = new Set<string>();
  for (const [key, arg] of Object.entries(args)) {
    if (key.split(':')[0] !== String(RouteParamtypes.QUERY)) continue;
    if (typeof arg.data !== 'string') return 'all';
    names.add(arg.data);
  }
  return names;
}

/**
 * A query member that the endpoint does not read (`GET /v1/keys?status=active`,
 * `GET /v1/policies?version=x`, `DELETE /v1/agents/a?cascade=true`, the Tasks API's
 * `GET /v1/tasks/{id}?grant_cursor=…`) is a `400` naming it, never ignored: a mistyped filter or
 * cursor must not answer as if it had been applied. Used by every admin API controller, and by the
 * authorization server's JSON APIs (the Tasks API, connect links, `/v1/me/connections`); not by
 * its OAuth endpoints, which refuse a query themselves with an RFC 6749 error, nor by the
 * browser pages of the connect flow, whose callback reads what the provider appends. Endpoints that take
 * a query DTO are left to the validation pipe, which refuses unknown members the same way, but
 * for the names `Object.prototype` holds (`__proto__`, `constructor`, `toString`…), which
 * class-transformer drops before the pipe could see them: refused here. Runs after the guards
 * (an unauthenticated call is a 401 first).
 */
@Injectable()
export class UnreadQueryInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType() === 'http') {
      const request = context.switchToHttp().getRequest<Request>();
      const given = Object.keys(request.query ?? {});
      if (given.length > 0) {
        const read = queryMembersRead(context.getClass(), context.getHandler().name);
        const unknown = given.filter((name) => (read === 'all' ? OBJECT_PROTOTYPE_JSON_KEYS.has(name) : !read.has(name)));
        if (unknown.length > 0) {
          throw new ValidationFailedError(
            // Names as sent can hold anything: printable ASCII only, and short, in the answer.
            unknown.map((name) => ({ field: name.replace(/[^\x20-\x7e]/g, '?').slice(0, 64), message: 'unknown field' })),
            'the query is invalid',
          );
        }
      }
    }
    return next.handle();
  }
}
