import { InvalidRequestError } from '../errors/oauth-errors';
import { safeToken } from '../util/safe-description';

/** Parsed `application/x-www-form-urlencoded` parameters: each name at most once, never empty. */
export type FormParams = ReadonlyMap<string, string>;

/** Options of {@link parseFormBody}. */
export interface ParseFormBodyOptions {
  /**
   * Most name=value pairs accepted (empty ones included), bounding the work an attacker
   * can cause. Default 100; token endpoint requests use about ten.
   */
  readonly maxParameters?: number;
}

const DEFAULT_MAX_PARAMETERS = 100;
const BAD_PERCENT = /%(?![0-9A-Fa-f]{2})/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function malformed(): InvalidRequestError {
  return new InvalidRequestError('the request body is not valid application/x-www-form-urlencoded', {
    reason: 'malformed_form_body',
  });
}

/**
 * `URLSearchParams` decoding ('+' is a space, percent-escapes are UTF-8), but strict: a
 * stray `%` or an invalid UTF-8 sequence is refused instead of being passed through or
 * replaced by U+FFFD, so two components never disagree on a parameter's value.
 */
function decodeComponent(raw: string): string {
  const plus = raw.replace(/\+/g, ' ');
  if (!plus.includes('%')) return plus;
  if (BAD_PERCENT.test(plus)) throw malformed();
  try {
    return decodeURIComponent(plus);
  } catch {
    throw malformed();
  }
}

/**
 * Parses an `application/x-www-form-urlencoded` body (RFC 6749 Appendix B).
 * Parameters sent without a value are treated as omitted (RFC 6749 §3.1); a parameter
 * included more than once, even with one copy empty, is an `invalid_request` (RFC 6749 §3.1),
 * as is malformed
 * percent-encoding or UTF-8, a pair without a name, or more than `maxParameters` pairs.
 */
export function parseFormBody(body: string | Uint8Array, options: ParseFormBodyOptions = {}): FormParams {
  const maxParameters = options.maxParameters ?? DEFAULT_MAX_PARAMETERS;
  let text: string;
  if (typeof body === 'string') {
    text = body;
  } else {
    try {
      text = utf8.decode(body);
    } catch {
      throw malformed();
    }
  }
  const params = new Map<string, string>();
  if (text === '') return params;
  // Every name sent, empty values included: a name sent twice is a repetition even when one copy
  // is empty (a reader keeping the last copy would see another value than the first).
  const seen = new Set<string>();

  let pairs = 0;
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    pairs += 1;
    if (pairs > maxParameters) {
      throw new InvalidRequestError('the request has too many parameters', { reason: 'too_many_parameters' });
    }
    const separator = pair.indexOf('=');
    const name = decodeComponent(separator === -1 ? pair : pair.slice(0, separator));
    const value = separator === -1 ? '' : decodeComponent(pair.slice(separator + 1));
    if (name === '') throw malformed();
    if (seen.has(name)) {
      throw new InvalidRequestError(`parameter ${safeToken(name)} is included more than once`, {
        reason: 'duplicate_parameter',
      });
    }
    seen.add(name);
    if (value !== '') params.set(name, value);
  }
  return params;
}

/** The value of a required parameter, or `invalid_request` "missing required parameter NAME". */
export function requireParam(params: FormParams, name: string): string {
  const value = params.get(name);
  if (value === undefined) {
    throw new InvalidRequestError(`missing required parameter ${safeToken(name)}`, { reason: 'missing_parameter' });
  }
  return value;
}

/** The value of an optional parameter, `undefined` when absent or sent empty. */
export function optionalParam(params: FormParams, name: string): string | undefined {
  return params.get(name);
}
