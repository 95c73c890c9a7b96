import { requestTextProblem, ValidationFailedError } from '@writ/platform';

/** Encodes a list position as an opaque cursor (base64url of JSON). */
export function encodeCursor(position: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(position), 'utf8').toString('base64url');
}

/**
 * Decodes a cursor made by {@link encodeCursor} and checks its shape with `accept`; anything
 * else is a `400` on the field `cursor`. Absent means the first page; `maxLength` bounds the text.
 */
export function decodeCursor<T>(cursor: string | undefined, accept: (value: unknown) => value is T, maxLength = 1024): T | undefined {
  if (cursor === undefined) return undefined;
  let value: unknown;
  try {
    if (cursor.length > maxLength || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw new Error('not base64url');
    value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    value = undefined;
  }
  if (!accept(value)) throw new ValidationFailedError([{ field: 'cursor', message: 'is not a cursor of this list' }], 'the query is invalid');
  return value;
}

/** Shape check of a cursor `{k: string}` (a key-ordered list). */
export function isKeyCursor(value: unknown): value is { k: string } {
  const key = typeof value === 'object' && value !== null ? (value as { k?: unknown }).k : undefined;
  // The key is compared in SQL: no NUL or lone surrogate may reach the query.
  return typeof key === 'string' && key.length <= 256 && requestTextProblem(key) === undefined;
}

/** A page of a list as the admin API answers it. */
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}
