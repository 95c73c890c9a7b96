import { MigrationInterface, QueryRunner } from 'typeorm';

/**
 * `connectors.kind`: `http` (an HTTP API, operations are method + path) or `mcp` (a
 * Streamable HTTP MCP server, operations are tools). Existing connectors are `http`. The
 * service role already holds its privileges on the whole table.
 */
export class ConnectorKind1764470000000 implements MigrationInterface {
  name = 'ConnectorKind1764470000000';

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE connectors ADD COLUMN kind text NOT NULL DEFAULT 'http' CHECK (kind IN ('http', 'mcp'))`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query('ALTER TABLE connectors DROP COLUMN kind');
  }
}
