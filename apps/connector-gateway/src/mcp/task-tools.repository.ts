import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { PG_POOL } from '@writ/database';

const TASK_ACTIONS = `
  SELECT DISTINCT action
    FROM tasks k, jsonb_array_elements(k.allowed) AS entry, jsonb_array_elements_text(entry->'actions') AS action
   WHERE k.id = $1 AND entry->>'connector' = $2`;

/**
 * The tools a task allows on one connector: what an MCP client of the task may see in
 * `tools/list` (each call still needs a credential for its own tool).
 */
@Injectable()
export class TaskToolsRepository {
  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  /** The actions of the task's `allowed` entries for `connectorId`. */
  async actions(taskId: string, connectorId: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ action: string }>({ name: 'writ_gateway_task_tools', text: TASK_ACTIONS, values: [taskId, connectorId] });
    return rows.map((row) => row.action);
  }
}
