import { MigrationInterface, QueryRunner } from 'typeorm';
import { createIndexConcurrently, dropIndexConcurrently } from './online-index';

/**
 * `tasks.idempotency_key` and `tasks.request_digest`: a task declared with an `Idempotency-Key`
 * is declared once per orchestrator and key; the same request sent again (a retry after a lost
 * answer) gets the same task back, another request under that key a `409`. The unique index only
 * holds keyed tasks. `writ_service` already has its grants on `tasks` (table grants cover new
 * columns).
 *
 * Outside a transaction (`tasks` takes writes all the time): the columns are a catalog change (a
 * moment's ACCESS EXCLUSIVE lock, bounded by the migration's `lock_timeout`), and the index is
 * built concurrently. Every step is re-runnable.
 */
export class TaskIdempotencyKeys1764580000000 implements MigrationInterface {
  name = 'TaskIdempotencyKeys1764580000000';
  transaction = false;

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE tasks ADD COLUMN IF NOT EXISTS idempotency_key text, ADD COLUMN IF NOT EXISTS request_digest text');
    await createIndexConcurrently(q, {
      name: 'tasks_idempotency',
      table: 'tasks',
      columns: ['orchestrator_id', 'idempotency_key'],
      unique: true,
      where: 'idempotency_key IS NOT NULL',
    });
  }

  async down(q: QueryRunner): Promise<void> {
    await dropIndexConcurrently(q, 'tasks_idempotency');
    await q.query('ALTER TABLE tasks DROP COLUMN IF EXISTS idempotency_key, DROP COLUMN IF EXISTS request_digest');
  }
}
