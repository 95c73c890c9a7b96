/**
 * The names of a request body's top-level members as an upstream framework might read them
 * into its parameters (Rails, Laravel, Flask and Rack merge them with the query's and the
 * path's). Over-approximated, so that a name is never missed:
 * - JSON (`application/json`, `*+json`, any type naming json): the top-level object's keys;
 *   a body that is not valid JSON gives every string in it (a lenient parser might still
 *   read one as a key);
 * - `application/x-www-form-urlencoded`: its parameter names;
 * - `multipart/form-data`: every `name=` of a part's disposition (over-approximated by a scan
 *   of the whole body);
 * - no content type: its form parameter names (Rack and Rails read a `POST` without one as a
 *   form), and the keys of a JSON object;
 * - XML (a type ending in `/xml` or `+xml`): every element name (Rails' XML params parser);
 * - anything else (`text/plain`, `application/octet-stream`...): the keys of the body if it is
 *   a JSON object, every string in it if it only starts as one (Flask's `get_json(force=True)`, Express's `json({type: '*\/*'})` parse
 *   any type), which are names under every type (Laravel reads a body as JSON when its type
 *   mentions `/json` anywhere);
 * - a list of types (`a, b`, or words after the type): the names under each of them (PHP, Rack
 *   and Rails read the first);
 * - a body in UTF-16 or UTF-32 as Python's `json.loads` finds it (see {@link wideText}): the
 *   keys of the JSON object it holds, whatever the type.
 */
export function bodyMemberNames(contentType: string | undefined, body: Buffer): string[] {
  if (body.length === 0) return [];
  const text = body.toString('utf8');
  // A list of types (`a, b`) or a type and words (`a b`) is read by its first type by PHP, Rack
  // and Rails, by another by stricter parsers: read the body as each. Laravel's `isJson()` reads
  // any body whose type mentions `/json` or `+json` (`...form-urlencoded; x=/json` too) as JSON:
  // the keys of a JSON object are names whatever the type says.
  const types = (contentType ?? '').split(/[,\s]+/).map((part) => part.split(';')[0].trim().toLowerCase());
  const names = new Set<string>();
  for (const type of types.some((type) => type.includes('/')) ? types.filter((type) => type.includes('/')) : ['']) {
    for (const name of namesAs(type, text, body)) names.add(name);
  }
  for (const name of jsonObjectKeys(text)) names.add(name);
  const wide = wideText(body);
  if (wide !== undefined) for (const name of jsonObjectKeys(wide)) names.add(name);
  return [...names];
}

/**
 * The body as Python's `json.loads` reads bytes when it finds them in UTF-16 or UTF-32 (by a
 * byte order mark, or by where the first bytes are zero: its `detect_encoding`), whatever the
 * content type says (Flask's `get_json` hands it the bytes); `undefined` for anything it reads
 * as UTF-8.
 */
function wideText(body: Buffer): string | undefined {
  const [a, b, c, d] = body;
  if (a === 0xff && b === 0xfe && c === 0 && d === 0) return utf32(body.subarray(4), true);
  if (a === 0 && b === 0 && c === 0xfe && d === 0xff) return utf32(body.subarray(4), false);
  if (a === 0xff && b === 0xfe) return new TextDecoder('utf-16le').decode(body.subarray(2));
  if (a === 0xfe && b === 0xff) return new TextDecoder('utf-16be').decode(body.subarray(2));
  if (body.length < 4) return undefined;
  if (a === 0) return b !== 0 ? new TextDecoder('utf-16be').decode(body) : utf32(body, false);
  if (b === 0) return c !== 0 || d !== 0 ? new TextDecoder('utf-16le').decode(body) : utf32(body, true);
  return undefined;
}

function utf32(bytes: Buffer, littleEndian: boolean): string {
  let text = '';
  for (let index = 0; index + 4 <= bytes.length; index += 4) {
    const point = littleEndian ? bytes.readUInt32LE(index) : bytes.readUInt32BE(index);
    text += point <= 0x10ffff ? String.fromCodePoint(point) : '\ufffd';
  }
  return text;
}

/** The body's member names read as `type` (a media type without parameters, lower case; `''` for none). */
function namesAs(type: string, text: string, body: Buffer): string[] {
  if (type.includes('json')) {
    try {
      return objectKeys(JSON.parse(text));
    } catch {
      return everyString(text);
    }
  }
  if (type === 'application/x-www-form-urlencoded') return formNames(text);
  if (type.startsWith('multipart/')) {
    const names: string[] = [];
    for (const match of body.toString('latin1').matchAll(/\bname(\*?)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/gi)) {
      names.push(...partNames(match[2] ?? match[3], match[1] === '*'));
    }
    return names;
  }
  if (type === '') return formNames(text);
  if (type.endsWith('/xml') || type.endsWith('+xml')) return [...text.matchAll(/<\s*([^\s/>!?]+)/g)].map((match) => match[1]);
  return [];
}

/**
 * A form's parameter names as `URLSearchParams` reads them, also split on `;` (Go before 1.17
 * and Python before 3.9.2 read `a=1;project=evil` as two parameters, as they read a query),
 * and also with `%uXXXX` escapes decoded where a name has them (classic ASP.NET's
 * `HttpUtility.UrlDecode` does, and its model binding reads form values before the query's:
 * `%u0070roject` is `project` to it).
 */
function formNames(text: string): string[] {
  const names = [...new URLSearchParams(text).keys()];
  if (text.includes(';')) names.push(...new URLSearchParams(text.replace(/;/g, '&')).keys());
  for (const part of text.split(/[&;]/)) {
    const raw = part.split('=')[0];
    if (!/%u[0-9a-f]{4}/i.test(raw)) continue;
    const unescaped = raw.replace(/\+/g, ' ').replace(/%u([0-9a-f]{4})/gi, (_match, hex: string) => String.fromCharCode(parseInt(hex, 16)));
    // The rest of the name's escapes decoded as URLSearchParams does; a lone surrogate is left as it is.
    const reescaped = unescaped.replace(/[^%]+/g, (run) => {
      try {
        return encodeURIComponent(run);
      } catch {
        return run;
      }
    });
    names.push(...new URLSearchParams(`${reescaped}=`).keys());
  }
  return names;
}

/**
 * A multipart part's name as parsers may read it: as written, with quoted-pair backslashes
 * removed, percent-decoded (as browsers escape `"` in names), and for `name*=` the RFC 5987
 * value (`UTF-8''...` decoded).
 */
function partNames(raw: string, extended: boolean): string[] {
  const unescaped = raw.replace(/\\(.)/g, '$1');
  const names = [raw, unescaped];
  const value = extended ? unescaped.replace(/^[^']*'[^']*'/, '') : unescaped;
  try {
    names.push(decodeURIComponent(value));
  } catch {
    names.push(value);
  }
  return [...new Set(names)];
}

/**
 * The keys of a body that is a JSON object to some parser: `JSON.parse`'s reading, and for a
 * text that only a lenient parser reads as an object (a byte order mark, which Express's
 * `json()` and Python's `json.loads` drop; `NaN` or `Infinity`, which Python reads) every
 * string in it.
 */
function jsonObjectKeys(text: string): string[] {
  try {
    return objectKeys(JSON.parse(text));
  } catch {
    return /^\ufeff?\s*\{/.test(text) ? everyString(text) : [];
  }
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
