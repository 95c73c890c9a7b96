import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Drops `tasks.grants_issued`: the number of credentials a task issued is counted from
 * `access_tokens` when it is read, instead of being incremented on the task row by every
 * issuance (which made concurrent issuances for one task rewrite one row in each audit batch).
 */
export class CountGrants1764370000000 implements MigrationInterface {
  name = 'CountGrants1764370000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE tasks DROP COLUMN grants_issued');
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE tasks ADD COLUMN grants_issued integer NOT NULL DEFAULT 0');
    await q.query(`UPDATE tasks t SET grants_issued = (SELECT count(*) FROM access_tokens a WHERE a.task_id = t.id AND a.kind = 'connector')`);
  }
}
