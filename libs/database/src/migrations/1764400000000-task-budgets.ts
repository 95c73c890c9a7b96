import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * Task budgets: the `limits` an `allowed` entry of a task declares (`calls`, `sum`), one row
 * per entry and rule, reserved by the gateway with a conditional UPDATE before each forwarded
 * call. Kept out of `tasks` so that calls of a task with limits do not rewrite the task row,
 * and tasks without limits have no rows at all. `access_tokens.budget_entries` lists, at
 * issuance, the indexes of the task's limited entries that cover the credential (NULL: none,
 * and the gateway's hot path stays as it was).
 */
export class TaskBudgets1764400000000 implements MigrationInterface {
  name = 'TaskBudgets1764400000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE task_budgets (
        task_id uuid NOT NULL REFERENCES tasks (id),
        entry smallint NOT NULL CHECK (entry >= 0),
        rule text NOT NULL CHECK (rule = 'calls' OR rule LIKE 'sum:%'),
        maximum numeric NOT NULL CHECK (maximum > 0),
        used numeric NOT NULL DEFAULT 0 CHECK (used >= 0),
        PRIMARY KEY (task_id, entry, rule)
      )`);
    await q.query('ALTER TABLE access_tokens ADD COLUMN budget_entries smallint[]');
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, UPDATE ON task_budgets TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE access_tokens DROP COLUMN IF EXISTS budget_entries');
    await q.query('DROP TABLE IF EXISTS task_budgets');
  }
}
