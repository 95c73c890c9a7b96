import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `mcp_sessions`: each MCP session opened through the gateway, bound to the task whose
 * credential opened it. The upstream server tells sessions apart by `Mcp-Session-Id` alone
 * (every agent reaches it with the one connector credential), so the gateway refuses a
 * session id on any other task's requests. Only a SHA-256 of the id is stored.
 */
export class McpSessions1764470000001 implements MigrationInterface {
  name = 'McpSessions1764470000001';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`
      CREATE TABLE mcp_sessions (
        connector_id text NOT NULL,
        session_hash text NOT NULL,
        task_id text NOT NULL,
        agent_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (connector_id, session_hash)
      )`);
    await q.query(`
      DO $$
      BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'writ_service') THEN
          GRANT SELECT, INSERT, DELETE ON mcp_sessions TO writ_service;
        END IF;
      END $$`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('DROP TABLE mcp_sessions');
  }
}
