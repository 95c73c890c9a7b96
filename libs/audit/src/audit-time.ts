/**
 * A `timestamptz` read back as Writ wrote it (ISO 8601, UTC, milliseconds). A value no writer
 * of Writ stores (`infinity`, a year past what a JavaScript Date holds) keeps a text of its own
 * that no hash or signature matches: verification names the row instead of failing, and reads
 * still answer.
 */
export function storedTime(value: unknown): string {
  return value instanceof Date && !Number.isNaN(value.getTime()) ? value.toISOString() : `not a time: ${String(value)}`;
}
