import { QueryRunner } from 'typeorm';

/**
 * Index changes that never block writes, for migrations on tables that hold many rows and take
 * writes all the time (`HOT_TABLES`). A plain `CREATE INDEX` holds a SHARE lock on its table for
 * the whole build, and a plain `DROP INDEX` an ACCESS EXCLUSIVE one: every task declaration, end
 * and approval waits meanwhile, on every instance. `CONCURRENTLY` takes SHARE UPDATE EXCLUSIVE
 * instead (no writer waits; only other schema changes and VACUUM do), but cannot run in a
 * transaction: a migration that uses these helpers sets `transaction = false`, and is then
 * re-runnable from any point it can be interrupted at (a failed or cancelled concurrent build
 * leaves an INVALID index behind, dropped and built again by the next run).
 *
 * The concurrent statements run without `lock_timeout`: what they wait for (transactions older
 * than the build, SHARE UPDATE EXCLUSIVE) queues no writer behind them. Everything else in a
 * migration keeps the migration connection's `lock_timeout` (see `migrate`).
 */

/** The tables whose writes must never wait on a migration: a plain index build or rewrite on them is refused by the migrations' spec. */
export const HOT_TABLES = [
  'tasks',
  'approvals',
  'access_tokens',
  'audit_events',
  'client_assertion_jtis',
  'task_budgets',
  'task_grant_counts',
  'throttle_failures',
  'approval_webhook_deliveries',
  'admin_idempotency_keys',
  'connected_accounts',
  'mcp_sessions',
] as const;

/** An index on plain columns, as {@link createIndexConcurrently} and {@link replaceIndexConcurrently} build it. */
export interface IndexSpec {
  name: string;
  table: string;
  /** Key columns, in order (plain column names). */
  columns: readonly string[];
  unique?: boolean;
  /** Predicate of a partial index (SQL). */
  where?: string;
}

/** What the catalog says of an existing index. */
interface IndexState {
  valid: boolean;
  table: string;
  columns: string[];
  unique: boolean;
  partial: boolean;
}

async function indexState(q: QueryRunner, name: string): Promise<IndexState | undefined> {
  const rows = (await q.query(
    `SELECT i.indisvalid AND i.indisready AS valid, t.relname::text AS "table", i.indisunique AS unique, i.indpred IS NOT NULL AS partial,
            array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n) AS columns
       FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
      WHERE i.indexrelid = to_regclass($1)`,
    [name],
  )) as IndexState[];
  return rows[0];
}

/** Whether an existing (valid) index already is `spec`: same table, key columns, uniqueness and partiality. */
function matches(state: IndexState, spec: IndexSpec): boolean {
  return (
    state.table === spec.table &&
    state.unique === Boolean(spec.unique) &&
    state.partial === Boolean(spec.where) &&
    state.columns.length === spec.columns.length &&
    state.columns.every((column, i) => column === spec.columns[i])
  );
}

/** Runs one `CONCURRENTLY` statement without the session's `lock_timeout` (restored after it). */
async function concurrently(q: QueryRunner, sql: string): Promise<void> {
  if (q.isTransactionActive)
    throw new Error(`${sql.split(' (')[0]}: a concurrent index change cannot run in a transaction (set transaction = false on the migration)`);
  const [{ lock_timeout: saved }] = (await q.query('SHOW lock_timeout')) as { lock_timeout: string }[];
  await q.query(`SET lock_timeout = 0`);
  try {
    await q.query(sql);
  } finally {
    await q.query(`SELECT set_config('lock_timeout', $1, false)`, [saved]);
  }
}

function createSql(spec: IndexSpec, name: string): string {
  const where = spec.where ? ` WHERE ${spec.where}` : '';
  return `CREATE ${spec.unique ? 'UNIQUE ' : ''}INDEX CONCURRENTLY ${name} ON ${spec.table} (${spec.columns.join(', ')})${where}`;
}

/**
 * Builds `spec` without blocking writes. Re-runnable: an INVALID index of that name (a build that
 * failed or was interrupted) is dropped and built again; a valid one that is already `spec` is
 * kept. A valid index of that name that is another index is an error (name the new one otherwise,
 * or use {@link replaceIndexConcurrently}).
 */
export async function createIndexConcurrently(q: QueryRunner, spec: IndexSpec): Promise<void> {
  const state = await indexState(q, spec.name);
  if (state?.valid) {
    if (matches(state, spec)) return;
    throw new Error(`index ${spec.name} exists and is not ${createSql(spec, spec.name)}`);
  }
  if (state) await concurrently(q, `DROP INDEX CONCURRENTLY IF EXISTS ${spec.name}`);
  await concurrently(q, createSql(spec, spec.name));
}

/** Drops an index, if it exists, without blocking writes. */
export async function dropIndexConcurrently(q: QueryRunner, name: string): Promise<void> {
  await concurrently(q, `DROP INDEX CONCURRENTLY IF EXISTS ${name}`);
}

/**
 * Replaces the index `spec.name` by `spec` without blocking writes, and without a moment when
 * neither exists: the new index is built as `<name>_next`, the old one dropped, the new one
 * renamed (`ALTER INDEX ... RENAME` takes SHARE UPDATE EXCLUSIVE on the index alone). Re-runnable
 * from any step: an index of that name that already is `spec` (key columns, uniqueness,
 * partiality) is the end state. So a replacement must change one of those: one that changes only
 * a predicate or an operator class takes a new name instead.
 */
export async function replaceIndexConcurrently(q: QueryRunner, spec: IndexSpec): Promise<void> {
  const next = `${spec.name}_next`;
  const current = await indexState(q, spec.name);
  if (current?.valid && matches(current, spec)) {
    await dropIndexConcurrently(q, next);
    return;
  }
  await createIndexConcurrently(q, { ...spec, name: next });
  await dropIndexConcurrently(q, spec.name);
  await q.query(`ALTER INDEX ${next} RENAME TO ${spec.name}`);
}
