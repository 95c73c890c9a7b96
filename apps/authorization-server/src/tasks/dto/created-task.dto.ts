import type { TaskStatus } from '@writ/database';

/** The answer to `POST /v1/tasks` (`active`; a replay under an `Idempotency-Key` gives the task's status now). */
export interface CreatedTaskDto {
  task_id: string;
  task_token: string;
  expires_at: string;
  status: TaskStatus;
}
