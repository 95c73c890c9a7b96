import type { AuditRecord } from './audit-event';

/**
 * Deeper than anything Writ writes (its JSON inputs are bounded, see `parseJsonInput`, and nest a
 * few levels inside an event's own data), and far shallower than what `JSON.stringify` can
 * serialise before V8's stack runs out (a few thousand levels).
 */
export const MAX_READABLE_DEPTH = 1_000;

/** Whether `value` nests arrays and objects deeper than `limit` levels (an iterative walk: any depth is safe). */
export function nestsDeeperThan(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    if (depth > limit) return true;
    for (const child of Array.isArray(node) ? node : Object.values(node)) stack.push([child, depth + 1]);
  }
  return false;
}

/**
 * An event as the admin API can answer it. An event whose data nests deeper than
 * {@link MAX_READABLE_DEPTH} was not written by Writ (a row placed in the database by hand): its
 * data is replaced by a note, so that a list or a task's evidence still answers (serialising
 * such data would fail the whole response) and says which event it is. Its hash no longer
 * matches, as the chain's verification reports for that event.
 */
export function readableRecord(record: AuditRecord): AuditRecord {
  if (!nestsDeeperThan(record.data, MAX_READABLE_DEPTH)) return record;
  return { ...record, data: { unreadable: `data nested deeper than ${MAX_READABLE_DEPTH} levels: not written by Writ (audit:verify names this event)` } };
}
