import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { PG_POOL } from '@writ/database';
import type { RegisteredClient } from './registered-client';

/** Looks clients up by id: agents and orchestrators share one id space. */
@Injectable()
export class ClientRegistry {
  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  /** The agent or orchestrator with this id, whatever its status. */
  async find(id: string): Promise<RegisteredClient | undefined> {
    const { rows } = await this.pool.query(
      `SELECT id, 'agent' AS kind, name, status, jwks, '{}'::text[] AS allowed_agents FROM agents WHERE id = $1
       UNION ALL
       SELECT id, 'orchestrator' AS kind, name, status, jwks, allowed_agents FROM orchestrators WHERE id = $1
       LIMIT 1`,
      [id],
    );
    const row = rows[0];
    if (!row) return undefined;
    return { id: row.id, kind: row.kind, name: row.name, status: row.status, jwks: row.jwks, allowedAgents: row.allowed_agents };
  }
}
