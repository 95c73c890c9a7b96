import type { Request } from 'express';
import { FormParams, InvalidRequestError, parseFormBody } from '@writ/oauth';

/**
 * The form parameters of an OAuth endpoint request: `application/x-www-form-urlencoded`
 * only, parameters in the body only (never the query string), each at most once.
 */
export function formParams(request: Request): FormParams {
  const type = (request.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    throw new InvalidRequestError('the request body must be application/x-www-form-urlencoded');
  }
  if (request.url.includes('?')) {
    throw new InvalidRequestError('parameters must be sent in the request body, not the query string');
  }
  const body = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
  return parseFormBody(body);
}
