import { Inject, Injectable, OnApplicationShutdown } from '@nestjs/common';
import type { Pool } from 'pg';
import { CLIENT_CHANGED_CHANNEL, ListenedCache, PG_POOL } from '@writ/database';
import type { RowIntegrity } from '@writ/grants';
import { requestTextProblem, RUNTIME, type Runtime } from '@writ/platform';
import type { RegisteredClient } from './registered-client';

/** Longer claimed client ids are unknown without a lookup (registered ids are at most 128 characters). */
const MAX_CLIENT_ID_LENGTH = 256;

/** Most registrations held (unknown ids are never held; the bound only keeps memory finite). */
const MAX_CLIENTS = 10_000;

interface ClientRow {
  id: string;
  kind: RegisteredClient['kind'];
  name: string;
  status: RegisteredClient['status'];
  jwks: RegisteredClient['jwks'];
  allowed_agents: string[];
  version: string;
  integrity_tag: string | null;
}

/**
 * Looks clients up by id (agents and orchestrators share one id space), from memory when it
 * can: every instance drops a registration as soon as its change is notified on
 * `writ_client_changed`, and holds nothing while it is not listening (see `ListenedCache`).
 * A notification arrives shortly after the change commits, not before: a credential is
 * recorded only if the registration's `version` is still the one the request was
 * authenticated with (see `connectorCredentials`), otherwise the request is
 * authenticated again on a fresh read ({@link forget}, then {@link find}).
 */
@Injectable()
export class ClientRegistry implements OnApplicationShutdown {
  private readonly cache: ListenedCache<RegisteredClient>;
  private readonly integrity: RowIntegrity;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    @Inject(RUNTIME) runtime: Runtime,
  ) {
    this.integrity = runtime.rowIntegrity;
    this.cache = new ListenedCache(runtime.changes, CLIENT_CHANGED_CHANNEL, { maxEntries: MAX_CLIENTS, maxKeyLength: MAX_CLIENT_ID_LENGTH });
  }

  /** Stops listening (the runtime's connection serves other apps). */
  onApplicationShutdown(): void {
    this.cache.close();
  }

  /** Whether changes are being listened to (nothing is held otherwise). */
  get listening(): boolean {
    return this.cache.listening;
  }

  /**
   * The agent or orchestrator with this id, whatever its status; `fresh` reads it from
   * PostgreSQL even when held (for the endpoints that act on the answer without a version check).
   * A registration whose integrity tag does not verify (inserted or changed outside Writ) is
   * unknown, and never held: its tag is verified once per read, before it is remembered.
   */
  async find(id: string, fresh = false): Promise<RegisteredClient | undefined> {
    // The id comes from an unverified assertion: what no client id can be never reaches SQL.
    if (id.length > MAX_CLIENT_ID_LENGTH || requestTextProblem(id) !== undefined) return undefined;
    const held = fresh ? undefined : this.cache.get(id);
    if (held) return held;
    const mark = this.cache.mark();
    const { rows } = await this.pool.query<ClientRow>(
      `SELECT id, 'agent' AS kind, name, status, jwks, '{}'::text[] AS allowed_agents, version, integrity_tag FROM agents WHERE id = $1
       UNION ALL
       SELECT id, 'orchestrator' AS kind, name, status, jwks, allowed_agents, version, integrity_tag FROM orchestrators WHERE id = $1
       LIMIT 1`,
      [id],
    );
    const row = rows[0];
    if (!row) return undefined;
    const table = row.kind === 'agent' ? 'agents' : 'orchestrators';
    if (!this.integrity.verifyClient(table, { id: row.id, status: row.status, jwks: row.jwks, allowedAgents: row.allowed_agents }, row.integrity_tag))
      return undefined;
    const client: RegisteredClient = {
      id: row.id,
      kind: row.kind,
      name: row.name,
      status: row.status,
      jwks: row.jwks,
      allowedAgents: row.allowed_agents,
      version: row.version,
    };
    // Only known clients are held: unknown ids cannot grow the cache.
    this.cache.remember(id, client, mark);
    return client;
  }

  /** Drops a registration found stale where a credential was to be recorded. */
  forget(id: string): void {
    this.cache.forget(id);
  }
}
