import type { Request } from 'express';
import { FormParams, InvalidRequestError, parseFormBody, quoteToken } from '@writ/oauth';
import { contentTypeCharset, declaresUtf8 } from '@writ/platform';

/**
 * The form parameters of an OAuth endpoint request: `application/x-www-form-urlencoded`
 * only, in UTF-8 (RFC 6749 Appendix B), parameters in the body only (never the query string),
 * each at most once.
 */
export function formParams(request: Request): FormParams {
  const contentType = request.headers['content-type'] ?? '';
  const type = contentType.split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new InvalidRequestError('the request body must be application/x-www-form-urlencoded');
  }
  // The body is always decoded as UTF-8: a body declared in another charset would be read as
  // other text than its sender meant (and than a proxy or a log decoder reads).
  if (!declaresUtf8(contentType)) {
    const charset = contentTypeCharset(contentType) ?? '';
    throw new InvalidRequestError(`unsupported charset ${quoteToken(charset, 32)}: the form body must be UTF-8`, { reason: 'unsupported_charset' });
  }
  if (request.url.includes('?')) {
    throw new InvalidRequestError('parameters must be sent in the request body, not the query string');
  }
  const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
  return parseFormBody(body);
}
