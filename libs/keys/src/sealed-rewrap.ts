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

/**
 * The SQL condition (parameter `param`: the current key's `MasterKey.currentSealPrefix()`) of a sealed
 * column whose value was not sealed under the current master key: a previous key, or the
 * version before key ids.
 */
export function sealedUnderOtherKey(column: string, param: string): string {
  return `substring(${column} FROM 1 FOR ${1 + 8}) IS DISTINCT FROM ${param}::bytea`;
}

/**
 * Re-seals rows one at a time: `step` opens the row's value and writes it back sealed under the
 * current key in one conditional statement (`true`: written; `false`: the row changed meanwhile);
 * an {@link UnsealError} counts the row as unopened (logged by the caller, never fatal).
 */
export async function rewrapRows<Row>(rows: readonly Row[], id: (row: Row) => string, step: (row: Row) => Promise<boolean>): Promise<RewrapCount> {
  const count: RewrapCount = { rewrapped: 0, skipped: 0, unopened: [] };
  for (const row of rows) {
    try {
      if (await step(row)) count.rewrapped += 1;
      else count.skipped += 1;
    } catch (error) {
      if (!(error instanceof UnsealError)) throw error;
      count.unopened.push(id(row));
    }
  }
  return count;
}
