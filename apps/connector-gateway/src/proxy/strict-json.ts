import { findJsonInputProblem, quoteToken } from '@writ/oauth';

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
 * Parses a JSON body and refuses duplicate object keys (and what `findJsonInputProblem`
 * finds: `__proto__`/`constructor`/`prototype` keys, lone surrogates, numbers out of range,
 * nesting deeper than 32). Parsers disagree on duplicates (first
 * or last wins), so a body with them could pass the gateway's constraint check with one value
 * and reach the upstream with another. `JSON.parse` validates the syntax; a scan of the
 * (then known to be valid) text finds repeated keys per object.
 */
export function parseStrictJson(text: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new StrictJsonError('the body is not valid JSON');
  }
  const duplicate = findDuplicateKey(text);
  if (duplicate !== undefined) throw new StrictJsonError(`the body repeats the key ${quoteToken(duplicate)}`);
  // Forbidden keys, lone surrogates, overflowing numbers and deep nesting, as on every other API.
  const problem = findJsonInputProblem(value, { root: 'body' });
  if (problem) throw new StrictJsonError(problem.message, problem.path || undefined);
  return value;
}

/** The first key that appears twice in one object of valid JSON `text`, if any. */
export function findDuplicateKey(text: string): string | undefined {
  // One key set per open container; arrays get `undefined`.
  const stack: Array<Set<string> | undefined> = [];
  let expectKey = false;
  for (let index = 0; index < text.length; index += 1) {
    const char = text[index];
    if (char === '{') {
      stack.push(new Set());
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
        if (keys.has(key)) return key;
        keys.add(key);
        expectKey = false;
      }
      index = end;
    }
  }
  return undefined;
}
