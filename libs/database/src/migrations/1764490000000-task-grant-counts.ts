import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `task_grant_counts`: how many connector credentials each task has issued, kept by a
 * statement-level trigger on `access_tokens`, so that reading it (every exchange builds the
 * policy input with it) costs one index lookup instead of counting the task's credentials,
 * which grew with every grant. Not a column of `tasks`: issuing batches hold a share lock
 * on their tasks' rows, and updating those rows there would turn two instances' batches into
 * a lock upgrade deadlock. Batches are already serialised by the audit chain head lock, so
 * the counter rows (upserted in `task_id` order) add no wait of their own.
 */
export class TaskGrantCounts1764490000000 implements MigrationInterface {
  name = 'TaskGrantCounts1764490000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE task_grant_counts (
        task_id uuid PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
        issued integer NOT NULL
      )`);
    await q.query(`
      INSERT INTO task_grant_counts (task_id, issued)
      SELECT task_id, count(*) FROM access_tokens WHERE kind = 'connector' AND task_id IS NOT NULL GROUP BY task_id`);
    await q.query(`
      CREATE FUNCTION writ_count_task_grants() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO task_grant_counts (task_id, issued)
        SELECT task_id, count(*) FROM issued WHERE kind = 'connector' AND task_id IS NOT NULL GROUP BY task_id ORDER BY task_id
        ON CONFLICT (task_id) DO UPDATE SET issued = task_grant_counts.issued + EXCLUDED.issued;
        RETURN NULL;
      END $$`);
    await q.query(`
      CREATE TRIGGER access_tokens_count_task_grants AFTER INSERT ON access_tokens
      REFERENCING NEW TABLE AS issued FOR EACH STATEMENT EXECUTE FUNCTION writ_count_task_grants()`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE ON task_grant_counts TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TRIGGER access_tokens_count_task_grants ON access_tokens');
    await q.query('DROP FUNCTION writ_count_task_grants()');
    await q.query('DROP TABLE task_grant_counts');
  }
}
