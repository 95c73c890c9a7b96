import { ArgumentsHost, CallHandler, Catch, createParamDecorator, ExceptionFilter, ExecutionContext, Injectable, NestInterceptor } from '@nestjs/common';
import type { Request, Response } from 'express';
import { createHash } from 'node:crypto';
import { map, type Observable } from 'rxjs';
import { canonicalJsonText } from '@writ/audit';
import { ValidationFailedError } from '@writ/platform';

/** RFC 8785 canonical JSON (the audit chain's): one text for one value, whatever order jsonb kept its members in. */
export const canonicalJson = canonicalJsonText;

/**
 * The strong entity tag (RFC 9110 section 8.8.3) of a resource as the API shows it: a digest of
 * its representation (which carries `updated_at` and a credential's fingerprint and `set_at`), so
 * any change, a credential rotation included, gives a new tag.
 */
export function entityTag(resource: unknown): string {
  return `"${createHash('sha256').update(canonicalJson(resource)).digest('base64url').slice(0, 32)}"`;
}

/** An `If-Match` condition: any current representation (`*`), or one of these strong tags. */
export type IfMatch = '*' | string[];

/** The `400` of an `If-Match` that is neither `*` nor a list of entity tags. */
const MALFORMED = new ValidationFailedError(
  [{ field: 'If-Match', message: 'must be * or a comma-separated list of entity tags ("…"), as the ETag header gives them' }],
  'the request headers are invalid',
);

/** Parses `If-Match` (absent: `undefined`); a malformed value is a `400` naming the header, never ignored. */
export function parseIfMatch(header: string | string[] | undefined): IfMatch | undefined {
  if (header === undefined) return undefined;
  const text = Array.isArray(header) ? header.join(',') : header;
  if (text.trim() === '*') return '*';
  if (text.length > 4096) throw MALFORMED;
  const tags = text.split(',').map((part) => part.trim());
  // entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E (obs-text left out).
  if (tags.length === 0 || !tags.every((tag) => /^(W\/)?"[\x21\x23-\x7e]*"$/.test(tag))) throw MALFORMED;
  // If-Match uses the strong comparison: a weak tag never matches.
  return tags.filter((tag) => !tag.startsWith('W/'));
}

/** Thrown when `If-Match` does not match the current representation: `412`, nothing changed. */
export class PreconditionFailedError extends Error {
  constructor(what: string) {
    super(`the ${what} changed since this version was read (If-Match does not match its ETag); read it again and reapply the change`);
    this.name = 'PreconditionFailedError';
  }
}

/**
 * Evaluates `If-Match` against the current representation, read under the row lock of the
 * transaction that changes it, so that two changes made from one read cannot both apply.
 */
export function requireMatch(condition: IfMatch | undefined, current: unknown, what: string): void {
  if (condition === undefined || condition === '*') return;
  if (!condition.includes(entityTag(current))) throw new PreconditionFailedError(what);
}

/** Injects the request's parsed `If-Match` (`400` when malformed). */
export const IfMatchHeader = createParamDecorator((_data: unknown, context: ExecutionContext): IfMatch | undefined =>
  parseIfMatch(context.switchToHttp().getRequest<Request>().headers['if-match']),
);

/** Sets `ETag` on a response that carries one resource, for a later `If-Match`. */
@Injectable()
export class EntityTagInterceptor implements NestInterceptor {
  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    const response = context.switchToHttp().getResponse<Response>();
    return next.handle().pipe(
      map((body: unknown) => {
        if (body !== null && typeof body === 'object' && !response.headersSent) response.setHeader('ETag', entityTag(body));
        return body;
      }),
    );
  }
}

/** Answers {@link PreconditionFailedError}: `412 {error: 'precondition_failed', message}`. */
@Catch(PreconditionFailedError)
export class PreconditionFailedFilter implements ExceptionFilter {
  catch(exception: PreconditionFailedError, host: ArgumentsHost): void {
    const response = host.switchToHttp().getResponse<Response>();
    response.setHeader('Cache-Control', 'no-store');
    response.status(412).json({ error: 'precondition_failed', message: exception.message });
  }
}
