import { grantsIssuedSql } from '@writ/grants';
import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { ConnectorDetail, ConnectorEntity, ConnectorOperation, PG_POOL, RowOf, TaskEntity, TaskStatus } from '@writ/database';

/** A task as the token exchange needs it. */
export interface ExchangeTask {
  id: string;
  agentId: string;
  orchestratorId: string;
  purpose: string;
  allowed: ConnectorDetail[];
  onBehalfOf: string | null;
  metadata: Record<string, unknown>;
  status: TaskStatus;
  taskTokenJti: string;
  grantsIssued: number;
  refusals: number;
  outOfPurposeRequests: number;
  createdAt: Date;
  expiresAt: Date;
}

/** A connector's catalogue, as the policy sees it. */
export interface CatalogueConnector {
  id: string;
  name: string;
  operations: ConnectorOperation[];
}

/**
 * How long this instance reuses a connector's catalogue for policy input. A deleted connector
 * cannot be used meanwhile: deletion revokes its credentials and the gateway reads the
 * connector on every call.
 */
export const CATALOGUE_CACHE_MS = 1_000;

/** The reads of the token-exchange hot path, in plain SQL. */
@Injectable()
export class ExchangeContextRepository {
  private readonly catalogue = new Map<string, { connector: CatalogueConnector; until: number }>();

  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  /** The task, or undefined. */
  async task(id: string): Promise<ExchangeTask | undefined> {
    const { rows } = await this.pool.query<Omit<RowOf<TaskEntity>, 'status_reason' | 'ended_at'> & { grants_issued: number }>({
      name: 'writ_exchange_task',
      text: `SELECT id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, task_token_jti,
                    ${grantsIssuedSql('tasks')} AS grants_issued, refusals, out_of_purpose_requests, created_at, expires_at
               FROM tasks WHERE id = $1`,
      values: [id],
    });
    const row = rows[0];
    if (!row) return undefined;
    return {
      id: row.id,
      agentId: row.agent_id,
      orchestratorId: row.orchestrator_id,
      purpose: row.purpose,
      allowed: row.allowed,
      onBehalfOf: row.on_behalf_of,
      metadata: row.metadata,
      status: row.status,
      taskTokenJti: row.task_token_jti,
      grantsIssued: row.grants_issued,
      refusals: row.refusals,
      outOfPurposeRequests: row.out_of_purpose_requests,
      createdAt: row.created_at,
      expiresAt: row.expires_at,
    };
  }

  /** Drops a connector's cached catalogue (it changed under an issuance). */
  forget(connectorId: string | null): void {
    if (connectorId === null) this.catalogue.clear();
    else this.catalogue.delete(connectorId);
  }

  /** The registered connectors among `ids`. */
  async connectors(ids: string[]): Promise<CatalogueConnector[]> {
    const now = Date.now();
    const cached = ids
      .map((id) => this.catalogue.get(id))
      .filter((hit) => hit && hit.until > now)
      .map((hit) => hit!.connector);
    if (cached.length === ids.length) return cached;
    const { rows } = await this.pool.query<Pick<RowOf<ConnectorEntity>, 'id' | 'name' | 'operations'>>(
      `SELECT id, name, operations FROM connectors WHERE id = ANY($1::text[])`,
      [ids],
    );
    const found: CatalogueConnector[] = rows.map((row) => ({ id: row.id, name: row.name, operations: row.operations }));
    if (this.catalogue.size >= 1_000) this.catalogue.clear();
    for (const connector of found) this.catalogue.set(connector.id, { connector, until: now + CATALOGUE_CACHE_MS });
    return found;
  }
}
