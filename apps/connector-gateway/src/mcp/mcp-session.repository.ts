import { createHash } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { PG_POOL } from '@writ/database';

function hashOf(sessionId: string): string {
  return createHash('sha256').update(sessionId, 'utf8').digest('base64url');
}

/**
 * Which task opened each MCP session (see the `mcp_sessions` migration): a session id is
 * honoured only on requests of that task, on every instance.
 */
@Injectable()
export class McpSessionRepository {
  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  /** The task that opened `sessionId` on this connector, or `undefined` when the gateway never saw it opened. */
  async owner(connectorId: string, sessionId: string): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ task_id: string }>({
      name: 'writ_gateway_mcp_session_owner',
      text: 'SELECT task_id FROM mcp_sessions WHERE connector_id = $1 AND session_hash = $2',
      values: [connectorId, hashOf(sessionId)],
    });
    return rows[0]?.task_id;
  }

  /** Forgets a session its task ended (`DELETE`), so the table holds live sessions only. */
  async unbind(connectorId: string, sessionId: string, taskId: string): Promise<void> {
    await this.pool.query({
      name: 'writ_gateway_mcp_session_unbind',
      text: 'DELETE FROM mcp_sessions WHERE connector_id = $1 AND session_hash = $2 AND task_id = $3',
      values: [connectorId, hashOf(sessionId), taskId],
    });
  }

  /** Binds a session the upstream just opened to the task whose `initialize` opened it (the first binding stands). */
  async bind(connectorId: string, sessionId: string, taskId: string, agentId: string): Promise<void> {
    await this.pool.query({
      name: 'writ_gateway_mcp_session_bind',
      text: `INSERT INTO mcp_sessions (connector_id, session_hash, task_id, agent_id) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
      values: [connectorId, hashOf(sessionId), taskId, agentId],
    });
  }
}
