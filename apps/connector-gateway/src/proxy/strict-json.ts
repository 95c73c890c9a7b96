import { findJsonInputProblem, quoteToken } from '@writ/oauth';
import { foldCase } from '@writ/connectors';

/** Why a body was refused by {@link parseStrictJson}. */
export class StrictJsonError extends Error {
  /** The member at fault (e.g. `body.amount`), when one is. */
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'StrictJsonError';
  }
}

/**
 * Parses a JSON body and refuses duplicate object keys, also keys equal once case is folded
 * (and what `findJsonInputProblem` finds: `__proto__`/`constructor`/`prototype` keys, lone
 * surrogates, numbers out of range, nesting deeper than 32). Parsers disagree on duplicates
 * (first or last wins), and Go's `encoding/json` and ASP.NET bind members ignoring case
 * (`Amount`, `ſ` for `s`, the Kelvin sign for `k`), so a body with them could pass the
 * gateway's constraint check with one value and reach the upstream with another.
 * `JSON.parse` validates the syntax; a scan of the (then known to be valid) text finds
 * repeated keys per object.
 */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new StrictJsonError('the body is not valid JSON');
  }
  const duplicate = findDuplicateKeys(text);
  if (duplicate !== undefined) {
    const [first, again] = duplicate;
    throw new StrictJsonError(
      first === again
        ? `the body repeats the key ${quoteToken(first)}`
        : `the body repeats the key ${quoteToken(first)} as ${quoteToken(again)} (some upstreams read keys ignoring case)`,
    );
  }
  // Forbidden keys, lone surrogates, overflowing numbers and deep nesting, as on every other API.
  const problem = findJsonInputProblem(value, { root: 'body' });
  if (problem) throw new StrictJsonError(problem.message, problem.path || undefined);
  return value;
}

/** The first key that appears twice in one object of valid JSON `text` (ignoring case), as written the second time, if any. */
export function findDuplicateKey(text: string): string | undefined {
  return findDuplicateKeys(text)?.[1];
}

/** The first pair of keys of one object of valid JSON `text` that are equal once case is folded: `[first, second]`. */
export function findDuplicateKeys(text: string): [string, string] | undefined {
  // One map (folded key to the key as written) per open container; arrays get `undefined`.
  const stack: Array<Map<string, string> | undefined> = [];
  let expectKey = false;
  for (let index = 0; index < text.length; index += 1) {
    const char = text[index];
    if (char === '{') {
      stack.push(new Map());
      expectKey = true;
    } else if (char === '[') {
      stack.push(undefined);
      expectKey = false;
    } else if (char === '}' || char === ']') {
      stack.pop();
      expectKey = false;
    } else if (char === ',') {
      expectKey = stack[stack.length - 1] !== undefined;
    } else if (char === '"') {
      let end = index + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      if (expectKey) {
        // Compare keys as decoded strings: "a" and "\u0061" are the same key.
        const key = JSON.parse(text.slice(index, end + 1)) as string;
        const keys = stack[stack.length - 1]!;
        const folded = foldCase(key);
        const first = keys.get(folded);
        if (first !== undefined) return [first, key];
        keys.set(folded, key);
        expectKey = false;
      }
      index = end;
    }
  }
  return undefined;
}
