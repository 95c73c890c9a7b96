import { Transform } from 'class-transformer';
import { ValidationFailedError } from './http-exception.filter';

/** Default page size of the lists of the admin API and of the user's own connections (the audit list has its own). */
export const DEFAULT_PAGE_SIZE = 50;
/** Largest page of those lists (the audit list has its own). */
export const MAX_PAGE_SIZE = 200;

/**
 * A query integer: only plain decimal digits become a number (`Number()` would also read
 * `0x10`, `1e3`, ` 5` or `1e400`); anything else stays a string and fails `@IsInt` with a 400.
 */
export const QueryInteger = (): PropertyDecorator =>
  Transform(({ value }: { value: unknown }) => (typeof value === 'string' && /^[0-9]{1,9}$/.test(value) ? Number(value) : value));

const POSITION_INSTANT = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.\d{1,6})?Z$/;

/**
 * True for the instant of a list position: ISO 8601 UTC with up to six fraction digits (what
 * `positionInstantSql` of `@writ/database` selects, or `Date.toISOString()` of older cursors), a real date from
 * 1970 on. It reaches PostgreSQL as text, so an impossible date that `Date.parse` rolls over
 * (February 30, 24:00) or that PostgreSQL refuses (year 0) is refused here as a `400`, not by
 * the database as a `500`.
 */
export function isPositionInstant(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const match = POSITION_INSTANT.exec(value);
  const at = Date.parse(value);
  return match !== null && at >= 0 && new Date(at).toISOString().slice(0, 19) === match[1];
}

/**
 * Encodes a list position as an opaque cursor (base64url of JSON). A cursor carries a position
 * only, never a filter: the filters of every page come from the request (its query, its
 * caller), so a forged cursor can move within what the caller may see, never widen it.
 */
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
