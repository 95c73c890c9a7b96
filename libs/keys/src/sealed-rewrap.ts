import type { Pool } from 'pg';
import { UnsealError } from './master-key';

/** What re-sealing one table's sealed values under the current master key did. */
export interface RewrapCount {
  /** Values re-sealed under the current key. */
  rewrapped: number;
  /** Values changed by someone else meanwhile (their new value was sealed under the current key), or held by a refresh: left as they are. */
  skipped: number;
  /** Rows (ids, never values) whose value opens under no configured key: left as they are. */
  unopened: string[];
}

/** PostgreSQL's SQLSTATE for `lock_timeout` expired. */
const LOCK_NOT_AVAILABLE = '55P03';

/** Rows read (and re-sealed) at a time: memory stays bounded whatever the table's size. */
export const REWRAP_BATCH_ROWS = 500;

/** Thrown by {@link rewrapInBatches} when asked to stop (the service is shutting down): what was done stays done. */
export class RewrapStopped extends Error {
  constructor(readonly count: RewrapCount) {
    super('the re-seal under the current master key was stopped by the shutdown');
    this.name = 'RewrapStopped';
  }
}

/**
 * What re-sealing one row did: `rewrapped`, `skipped` (the row changed meanwhile: left as it
 * is), or `current` (the current key already opens it: nothing to do, counted nowhere).
 */
export type RewrapStep = 'rewrapped' | 'skipped' | 'current';

/** How a running re-seal is told to stop, and tells its progress. */
export interface RewrapControl {
  /** True once the re-seal should stop (checked before each row). */
  stopped(): boolean;
  /** Called after each batch with the counts so far. */
  progress(count: RewrapCount): void;
}

/** A control that never stops and reports nothing (tools, tests). */
export const UNCONTROLLED: RewrapControl = { stopped: () => false, progress: () => undefined };

/**
 * Where a table's sealed values are (names written in the code, never taken from input): the
 * table, its key (batches page in its order), the sealed column, the other columns a step
 * needs, and a further condition on the rows.
 */
export interface SealedColumn {
  table: string;
  key: string;
  column: string;
  columns?: readonly string[];
  where?: string;
}

/**
 * The rows of `source` after `after` (by key), at most `limit`, whose value does not start with
 * `prefix` (the current key's `MasterKey.currentSealPrefix()`): sealed under a previous key, or
 * in the version before key ids.
 */
async function sealedRowsAfter<Row>(db: Pick<Pool, 'query'>, prefix: Buffer, source: SealedColumn, after: string | undefined, limit: number): Promise<Row[]> {
  const columns = [source.key, ...(source.columns ?? []), source.column].join(', ');
  const conditions = [
    ...(source.where ? [source.where] : []),
    `substring(${source.column} FROM 1 FOR ${prefix.length}) IS DISTINCT FROM $1::bytea`,
    ...(after === undefined ? [] : [`${source.key} > $3`]),
  ];
  const { rows } = await db.query(
    `SELECT ${columns} FROM ${source.table} WHERE ${conditions.join(' AND ')} ORDER BY ${source.key} LIMIT $2`,
    after === undefined ? [prefix, limit] : [prefix, limit, after],
  );
  return rows as Row[];
}

/**
 * Re-seals the values of `source` not sealed under the current key (`prefix`) in batches of
 * {@link REWRAP_BATCH_ROWS}, in key order, one row at a time: `step` opens the row's value and
 * writes it back sealed under the current key in one conditional statement (see
 * {@link RewrapStep}; a row locked past `lock_timeout` is skipped too); an {@link UnsealError}
 * counts the row as unopened (logged by the caller, never fatal). Rows left behind are never
 * read again in the same run, so it ends.
 */
export async function rewrapInBatches<Row extends Record<string, unknown>>(
  db: Pick<Pool, 'query'>,
  prefix: Buffer,
  source: SealedColumn,
  step: (row: Row) => Promise<RewrapStep>,
  control: RewrapControl,
): Promise<RewrapCount> {
  const id = (row: Row) => String(row[source.key]);
  const count: RewrapCount = { rewrapped: 0, skipped: 0, unopened: [] };
  let after: string | undefined;
  for (;;) {
    const rows = await sealedRowsAfter<Row>(db, prefix, source, after, REWRAP_BATCH_ROWS);
    for (const row of rows) {
      if (control.stopped()) throw new RewrapStopped(count);
      try {
        const done = await step(row);
        if (done === 'rewrapped') count.rewrapped += 1;
        else if (done === 'skipped') count.skipped += 1;
      } catch (error) {
        // A row held by another transaction past the lock timeout is left for the next start,
        // as a row changed meanwhile: it does not stop the rows after it.
        if ((error as { code?: unknown }).code === LOCK_NOT_AVAILABLE) count.skipped += 1;
        else if (error instanceof UnsealError) count.unopened.push(id(row));
        else throw error;
      }
    }
    control.progress(count);
    if (rows.length < REWRAP_BATCH_ROWS) return count;
    after = id(rows[rows.length - 1]);
  }
}
