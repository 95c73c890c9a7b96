import { canonicalize } from 'json-canonicalize';

/**
 * RFC 8785 (JCS) serialisation of a JSON value as produced by JSON.parse: object members
 * sorted by UTF-16 code units, no whitespace, numbers and strings as ECMAScript writes them.
 * Used to hash policy data independently of its formatting. The serialisation is
 * json-canonicalize's, as for the audit chain; this only refuses what JSON cannot hold.
 */
export function canonicalJson(value: unknown): string {
  assertJsonValue(value);
  return canonicalize(value);
}

function assertJsonValue(value: unknown): void {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
    return;
  }
  if (Array.isArray(value)) return value.forEach(assertJsonValue);
  if (typeof value === 'object') return Object.values(value).forEach((member) => member !== undefined && assertJsonValue(member));
  throw new TypeError(`canonicalJson: ${typeof value} is not a JSON value`);
}
