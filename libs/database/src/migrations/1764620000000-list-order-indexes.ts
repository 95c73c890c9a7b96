import { MigrationInterface, QueryRunner } from 'typeorm';
import { createIndexConcurrently, dropIndexConcurrently, IndexSpec, replaceIndexConcurrently } from './online-index';

/** The indexes this migration adds. */
const ADDED: IndexSpec[] = [
  { name: 'tasks_created', table: 'tasks', columns: ['created_at', 'id'] },
  { name: 'tasks_status', table: 'tasks', columns: ['status', 'created_at', 'id'] },
  { name: 'approvals_requested', table: 'approvals', columns: ['requested_at', 'id'] },
];

/** The indexes this migration rebuilds under the same name, as they are after it and as they were before. */
const REBUILT: { after: IndexSpec; before: IndexSpec }[] = [
  {
    after: { name: 'tasks_agent', table: 'tasks', columns: ['agent_id', 'created_at', 'id'] },
    before: { name: 'tasks_agent', table: 'tasks', columns: ['agent_id', 'created_at'] },
  },
  {
    after: { name: 'tasks_orchestrator', table: 'tasks', columns: ['orchestrator_id', 'created_at', 'id'] },
    before: { name: 'tasks_orchestrator', table: 'tasks', columns: ['orchestrator_id', 'created_at'] },
  },
  {
    after: { name: 'approvals_task', table: 'approvals', columns: ['task_id', 'requested_at', 'id'] },
    before: { name: 'approvals_task', table: 'approvals', columns: ['task_id'] },
  },
  {
    after: { name: 'approvals_pending', table: 'approvals', columns: ['requested_at', 'id'], where: `status = 'pending'` },
    before: { name: 'approvals_pending', table: 'approvals', columns: ['requested_at'], where: `status = 'pending'` },
  },
];

/**
 * Indexes in the order of the admin API's task and approval lists, so that a page is an index
 * scan (backward) bounded by its cursor, not a sort of the whole table or of one agent's rows.
 * The lists order by `created_at DESC, id DESC` (tasks) and `requested_at DESC, id DESC`
 * (approvals) and page with the row comparison `(created_at, id) < (cursor)`: each index ends
 * with both columns. Before, an unfiltered list had no index in its order (every page sorted
 * every task), and the filtered ones ended with the time alone (an incremental sort by id).
 *
 * - `tasks_created (created_at, id)`: the unfiltered list; a status filter alone walks it too.
 * - `tasks_agent`, `tasks_orchestrator`: the same columns after the filter, replacing the
 *   indexes of the same name that stopped at `created_at` (every use of those is served).
 * - `tasks_status (status, created_at, id)`: the status filter (a rare status, `revoked` say,
 *   is not found by walking every task); `status` is already indexed (`tasks_active_expiry`),
 *   so status changes were not HOT updates before either.
 * - `approvals_requested (requested_at, id)`: the unfiltered list and the status filters.
 * - `approvals_task (task_id, requested_at, id)`: the task filter, replacing `(task_id)`.
 * - `approvals_pending`: `(requested_at, id) WHERE status = 'pending'`, replacing
 *   `(requested_at)`, for the `pending` filter.
 *
 * `tasks` and `approvals` take writes all the time and may hold millions of rows: every index is
 * built (and every replaced one dropped) concurrently, outside a transaction, so no declaration,
 * end or approval waits for a build (see `online-index`). Re-runnable from any point.
 */
export class ListOrderIndexes1764620000000 implements MigrationInterface {
  name = 'ListOrderIndexes1764620000000';
  transaction = false;

  async up(q: QueryRunner): Promise<void> {
    for (const spec of ADDED) await createIndexConcurrently(q, spec);
    for (const { after } of REBUILT) await replaceIndexConcurrently(q, after);
  }

  async down(q: QueryRunner): Promise<void> {
    for (const { before } of REBUILT) await replaceIndexConcurrently(q, before);
    for (const spec of ADDED) await dropIndexConcurrently(q, spec.name);
  }
}
