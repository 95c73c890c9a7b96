import { requestTextProblem } from '@writ/platform';

// The codec is shared with the authorization server's lists (the user's own connections).
export { decodeCursor, encodeCursor } from '@writ/platform';

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
