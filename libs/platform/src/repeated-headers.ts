import type { NextFunction, Request, Response } from 'express';
import { InvalidRequestError } from '@writ/oauth';

/**
 * Request headers that carry one value and that Writ acts on. Node keeps the first of repeated
 * `Authorization`, `Content-Type` and `Host` headers and silently drops the others, and joins
 * repeated `DPoP` headers with a comma; a proxy or upstream in front or behind may read the last
 * one instead, so a request that repeats one is ambiguous and refused (RFC 9110 section 5.3 allows
 * repeating only list-valued fields; RFC 9449 section 4.3 wants exactly one DPoP header).
 */
export const SINGLETON_REQUEST_HEADERS: ReadonlySet<string> = new Set(['authorization', 'content-type', 'content-length', 'host', 'dpop', 'mcp-session-id']);

/** The first header of {@link SINGLETON_REQUEST_HEADERS} that `rawHeaders` (name, value, name, value...) holds twice, lower-cased. */
export function repeatedSingletonHeader(rawHeaders: readonly string[]): string | undefined {
  let seen: Set<string> | undefined;
  for (let index = 0; index < rawHeaders.length; index += 2) {
    const name = rawHeaders[index].toLowerCase();
    if (!SINGLETON_REQUEST_HEADERS.has(name)) continue;
    seen ??= new Set();
    if (seen.has(name)) return name;
    seen.add(name);
  }
  return undefined;
}

/** Refuses (`400 invalid_request`, naming the header) a request that repeats a single-valued header. */
export function refuseRepeatedHeaders(req: Request, _res: Response, next: NextFunction): void {
  const repeated = repeatedSingletonHeader(req.rawHeaders);
  if (repeated === undefined) next();
  else next(new InvalidRequestError(`the ${repeated} header is sent more than once`, { reason: 'repeated_header' }));
}
