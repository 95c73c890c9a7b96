import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `tasks.idempotency_key` and `tasks.request_digest`: a task declared with an `Idempotency-Key`
 * is declared once per orchestrator and key; the same request sent again (a retry after a lost
 * answer) gets the same task back, another request under that key a `409`. The unique index only
 * holds keyed tasks. `writ_service` already has its grants on `tasks` (table grants cover new
 * columns).
 */
export class TaskIdempotencyKeys1764580000000 implements MigrationInterface {
  name = 'TaskIdempotencyKeys1764580000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE tasks ADD COLUMN idempotency_key text, ADD COLUMN request_digest text');
    await q.query('CREATE UNIQUE INDEX tasks_idempotency ON tasks (orchestrator_id, idempotency_key) WHERE idempotency_key IS NOT NULL');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP INDEX tasks_idempotency');
    await q.query('ALTER TABLE tasks DROP COLUMN idempotency_key, DROP COLUMN request_digest');
  }
}
