/**
 * The names of a request body's top-level members as an upstream framework would read them
 * into its parameters (Rails, Laravel, Flask and Rack merge them with the query's):
 * - JSON (`application/json`, `*+json`, any type naming json): the top-level object's keys;
 *   a body that is not valid JSON gives every string in it (a lenient parser might still
 *   read one as a key);
 * - `application/x-www-form-urlencoded`: its parameter names;
 * - `multipart/form-data`: every `name=` of a part's disposition (over-approximated by a scan
 *   of the whole body);
 * - anything else, or no content type: none (frameworks do not read it as parameters).
 */
export function bodyMemberNames(contentType: string | undefined, body: Buffer): string[] {
  if (body.length === 0 || !contentType) return [];
  const type = contentType.split(';')[0].trim().toLowerCase();
  if (type.includes('json')) {
    const text = body.toString('utf8');
    try {
      const value: unknown = JSON.parse(text);
      return objectKeys(value);
    } catch {
      return everyString(text);
    }
  }
  if (type === 'application/x-www-form-urlencoded') return [...new URLSearchParams(body.toString('utf8')).keys()];
  if (type.startsWith('multipart/')) {
    const names: string[] = [];
    for (const match of body.toString('latin1').matchAll(/\bname\*?\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/gi)) names.push(match[1] ?? match[2]);
    return names;
  }
  return [];
}

/** The keys of a parsed JSON object (none for anything else). */
export function objectKeys(value: unknown): string[] {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? Object.keys(value) : [];
}

function everyString(text: string): string[] {
  const strings: string[] = [];
  for (const match of text.matchAll(/"((?:[^"\\]|\\.)*)"/g)) {
    try {
      strings.push(JSON.parse(match[0]) as string);
    } catch {
      strings.push(match[1]);
    }
  }
  return strings;
}
