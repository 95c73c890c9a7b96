import type { PoolClient } from 'pg';

/**
 * Work inside an audited transaction. It may run more than once (a batch of units that failed
 * is retried one unit at a time, each in a fresh transaction), so it must change nothing
 * outside `tx` and decide from what it reads through `tx`.
 */
export type TransactionWork<T> = (tx: PoolClient) => Promise<T>;

/**
 * The unit of work of every write to Writ's state: one PostgreSQL transaction that commits
 * the work together with the audit events it led to, or commits nothing. Writes that need no
 * event have none; writes never commit without theirs. `AuditService` implements it (it
 * group-commits concurrent units into one transaction of its hash chain).
 */
export interface AuditedTransaction<Event> {
  /** Runs `work` and appends `events(result)` in one transaction; resolves with the result after the commit. */
  run<T>(work: TransactionWork<T>, events: (result: T) => Event[]): Promise<T>;
}
