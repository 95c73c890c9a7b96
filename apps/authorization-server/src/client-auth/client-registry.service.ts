import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { PG_POOL } from '@writ/database';
import { requestTextProblem } from '@writ/platform';
import type { RegisteredClient } from './registered-client';

/**
 * How long a client read from PostgreSQL is reused by this instance. Short: a suspended
 * client or a removed key stops authenticating within this time, and issuance re-checks the
 * agent's status in the transaction that records the token, so no credential is issued to a
 * suspended agent even inside the window.
 */
export const CLIENT_CACHE_MS = 1_000;

/** Longer claimed client ids are unknown without a lookup (registered ids are at most 128 characters). */
const MAX_CLIENT_ID_LENGTH = 256;

/** Looks clients up by id: agents and orchestrators share one id space. */
@Injectable()
export class ClientRegistry {
  private readonly cache = new Map<string, { client: RegisteredClient | undefined; until: number }>();

  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  /** The agent or orchestrator with this id, whatever its status. */
  async find(id: string): Promise<RegisteredClient | undefined> {
    // The id comes from an unverified assertion: what no client id can be never reaches SQL.
    if (id.length > MAX_CLIENT_ID_LENGTH || requestTextProblem(id) !== undefined) return undefined;
    const now = Date.now();
    const hit = this.cache.get(id);
    if (hit && hit.until > now) return hit.client;
    const { rows } = await this.pool.query<Pick<RegisteredClient, 'id' | 'kind' | 'name' | 'status' | 'jwks'> & { allowed_agents: string[] }>(
      `SELECT id, 'agent' AS kind, name, status, jwks, '{}'::text[] AS allowed_agents FROM agents WHERE id = $1
       UNION ALL
       SELECT id, 'orchestrator' AS kind, name, status, jwks, allowed_agents FROM orchestrators WHERE id = $1
       LIMIT 1`,
      [id],
    );
    const row = rows[0];
    const client: RegisteredClient | undefined = row
      ? { id: row.id, kind: row.kind, name: row.name, status: row.status, jwks: row.jwks, allowedAgents: row.allowed_agents }
      : undefined;
    // Only known clients are cached, and the map is bounded: unknown ids cannot grow it.
    if (client) {
      if (this.cache.size >= 10_000) this.cache.clear();
      this.cache.set(id, { client, until: now + CLIENT_CACHE_MS });
    }
    return client;
  }
}
