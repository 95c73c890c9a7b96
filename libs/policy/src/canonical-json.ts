/**
 * RFC 8785 (JCS) serialisation of a JSON value as produced by JSON.parse: object members
 * sorted by UTF-16 code units, no whitespace, numbers and strings as ECMAScript writes them.
 * Used to hash policy data independently of its formatting. Written out here rather than with
 * json-canonicalize, which writes an object holding a member named `toJSON` (any value) with
 * `JSON.stringify`, members unsorted: such data, stored as jsonb (members shortest first), came
 * back under another version than it was activated as. Refuses what JSON cannot hold.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('canonicalJson: non-finite number');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    const members: string[] = [];
    for (const name of Object.keys(value).sort()) {
      const member = (value as Record<string, unknown>)[name];
      if (member !== undefined) members.push(`${JSON.stringify(name)}:${canonicalJson(member)}`);
    }
    return `{${members.join(',')}}`;
  }
  throw new TypeError(`canonicalJson: ${typeof value} is not a JSON value`);
}
