import { type BasicErrorOptions, InvalidGrantError } from '@writ/oauth';

/**
 * `invalid_grant` for a subject token that verified and names a task the exchange cannot use:
 * the task ended, or it is another agent's. Its `token.refused` event names the task
 * (`task_id`), so that the task's evidence shows an agent that kept asking after the task ended
 * (or a task token presented by another agent).
 */
export class TaskGrantRefusal extends InvalidGrantError {
  constructor(
    readonly taskId: string,
    description: string,
    options: BasicErrorOptions,
  ) {
    super(description, options);
  }
}
