import { canonicalDecimal } from '@writ/oauth';

/**
 * Numbers as the gateway checks them and as the upstream reads them. `JSON.parse` turns
 * `30000.000000000000001` into `30000`: checked against `lte 30000` it passes, and an upstream
 * that parses decimals exactly reads more than was granted. So a number in a constrained field
 * is accepted only when its text denotes exactly the value compared.
 */

const PLAIN_DECIMAL = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/;
/** Anything that looks like a number in some parser (JSON numbers, exponents, leading zeros, a plus sign). */
const NUMBER_LIKE = /^[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?$/;

/**
 * Why the number text `raw` (a JSON number token, a path segment or a query value) does not
 * denote exactly the number it parses to, or `undefined` when it does. Refused: exponent
 * notation (`3e4`: some upstreams read it as 3), a plus sign or leading zeros, `-0`, values
 * whose magnitude passes 2^53 - 1 (`9007199254740993` parses to ...992), and decimals that do
 * not survive the round trip through a double (`30000.000000000000001`).
 */
export function inexactNumberProblem(raw: string): string | undefined {
  if (!PLAIN_DECIMAL.test(raw)) return 'must be a number in plain decimal notation (no exponent, sign or leading zeros)';
  const value = Number(raw);
  if (!Number.isFinite(value) || Math.abs(value) > Number.MAX_SAFE_INTEGER) {
    return `must be a number from -${Number.MAX_SAFE_INTEGER} to ${Number.MAX_SAFE_INTEGER}`;
  }
  if (value === 0 && raw.startsWith('-')) return 'must not be negative zero';
  const unsigned = raw.replace(/^-/, '');
  if (canonicalDecimal(unsigned) !== canonicalDecimal(String(Math.abs(value)))) {
    return 'has more precision than the gateway can compare exactly';
  }
  return undefined;
}

/** True when path or query text is meant as a number (so an inexact one is a `400`, not a type mismatch). */
export function looksNumeric(text: string): boolean {
  return NUMBER_LIKE.test(text);
}

function skipSpace(text: string, index: number): number {
  while (index < text.length && (text[index] === ' ' || text[index] === '\t' || text[index] === '\n' || text[index] === '\r')) index += 1;
  return index;
}

function skipString(text: string, index: number): number {
  let end = index + 1;
  while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
  return end + 1;
}

/** The index just after the JSON value starting at `index` (iterative: nesting depth costs nothing). */
function skipValue(text: string, index: number): number {
  let depth = 0;
  let position = index;
  do {
    const char = text[position];
    if (char === '"') position = skipString(text, position);
    else if (char === '{' || char === '[') {
      depth += 1;
      position += 1;
    } else if (char === '}' || char === ']') {
      depth -= 1;
      position += 1;
    } else if (depth > 0) position += 1;
    else {
      while (position < text.length && /[-+0-9.eEa-z]/.test(text[position])) position += 1;
    }
  } while (depth > 0 && position < text.length);
  return position;
}

/**
 * The source text of the value at a dotted `path` of object members in `text`, which
 * `JSON.parse` has accepted and which has no duplicate keys; `undefined` when absent.
 */
export function rawValueAt(text: string, path: readonly string[]): string | undefined {
  let index = skipSpace(text, 0);
  for (const segment of path) {
    if (text[index] !== '{') return undefined;
    index = skipSpace(text, index + 1);
    let found = false;
    while (text[index] === '"') {
      const keyEnd = skipString(text, index);
      const key = JSON.parse(text.slice(index, keyEnd)) as string;
      index = skipSpace(text, skipSpace(text, keyEnd) + 1);
      if (key === segment) {
        found = true;
        break;
      }
      index = skipSpace(text, skipValue(text, index));
      if (text[index] === ',') index = skipSpace(text, index + 1);
    }
    if (!found) return undefined;
  }
  return text.slice(index, skipValue(text, index));
}

/** The source text of each element of a JSON array's source text. */
export function rawArrayElements(text: string): string[] {
  const elements: string[] = [];
  let index = skipSpace(text, 1);
  while (index < text.length && text[index] !== ']') {
    const end = skipValue(text, index);
    elements.push(text.slice(index, end));
    index = skipSpace(text, end);
    if (text[index] === ',') index = skipSpace(text, index + 1);
  }
  return elements;
}
