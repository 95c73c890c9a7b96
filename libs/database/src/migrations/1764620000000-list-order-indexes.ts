import { MigrationInterface, QueryRunner } from 'typeorm';

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
 */
export class ListOrderIndexes1764620000000 implements MigrationInterface {
  name = 'ListOrderIndexes1764620000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('CREATE INDEX tasks_created ON tasks (created_at, id)');
    await q.query('DROP INDEX tasks_agent');
    await q.query('CREATE INDEX tasks_agent ON tasks (agent_id, created_at, id)');
    await q.query('DROP INDEX tasks_orchestrator');
    await q.query('CREATE INDEX tasks_orchestrator ON tasks (orchestrator_id, created_at, id)');
    await q.query('CREATE INDEX tasks_status ON tasks (status, created_at, id)');
    await q.query('CREATE INDEX approvals_requested ON approvals (requested_at, id)');
    await q.query('DROP INDEX approvals_task');
    await q.query('CREATE INDEX approvals_task ON approvals (task_id, requested_at, id)');
    await q.query('DROP INDEX approvals_pending');
    await q.query(`CREATE INDEX approvals_pending ON approvals (requested_at, id) WHERE status = 'pending'`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP INDEX approvals_pending');
    await q.query(`CREATE INDEX approvals_pending ON approvals (requested_at) WHERE status = 'pending'`);
    await q.query('DROP INDEX approvals_task');
    await q.query('CREATE INDEX approvals_task ON approvals (task_id)');
    await q.query('DROP INDEX approvals_requested');
    await q.query('DROP INDEX tasks_status');
    await q.query('DROP INDEX tasks_orchestrator');
    await q.query('CREATE INDEX tasks_orchestrator ON tasks (orchestrator_id, created_at)');
    await q.query('DROP INDEX tasks_agent');
    await q.query('CREATE INDEX tasks_agent ON tasks (agent_id, created_at)');
    await q.query('DROP INDEX tasks_created');
  }
}
