/**
 * SQL selecting a `timestamptz` column as the text a list cursor carries: ISO 8601 UTC to the
 * microsecond, as PostgreSQL keeps it. A JavaScript `Date` keeps milliseconds only, and a cursor
 * made from one skips the rows stamped later within the millisecond of a page's last row; with
 * the exact instant, the keyset comparison `(column, id) < ($at::timestamptz, $id)` stays on the
 * raw column, so an index on it serves the pages. `column` is SQL, never a request value.
 */
export function positionInstantSql(column: string): string {
  return `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
}
