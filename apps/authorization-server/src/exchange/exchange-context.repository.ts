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
  /** The verified user the task acts for, or null. */
  user: { issuer: string; subject: string } | null;
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
  /** The connector's upstream credential type (`oauth2_authorization_code`: per-user connected accounts). */
  credentialType: string | null;
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
      text: `SELECT id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, user_issuer, user_subject, metadata, status, task_token_jti,
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
      user: row.user_subject && row.user_issuer ? { issuer: row.user_issuer, subject: row.user_subject } : null,
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
    const { rows } = await this.pool.query<Pick<RowOf<ConnectorEntity>, 'id' | 'name' | 'operations' | 'credential_type'>>(
      `SELECT id, name, operations, credential_type FROM connectors WHERE id = ANY($1::text[])`,
      [ids],
    );
    const found: CatalogueConnector[] = rows.map((row) => ({ id: row.id, name: row.name, operations: row.operations, credentialType: row.credential_type }));
    if (this.catalogue.size >= 1_000) this.catalogue.clear();
    for (const connector of found) this.catalogue.set(connector.id, { connector, until: now + CATALOGUE_CACHE_MS });
    return found;
  }

  /**
   * The policy's `connections`: for each of `connectors` that uses connected accounts, the
   * user's connection (status and scopes), or null without a user or a connection.
   */
  async connections(connectors: CatalogueConnector[], user: ExchangeTask['user']): Promise<Record<string, { status: string; scopes: string[] } | null>> {
    const ids = connectors.filter((connector) => connector.credentialType === 'oauth2_authorization_code').map((connector) => connector.id);
    if (ids.length === 0) return {};
    const result: Record<string, { status: string; scopes: string[] } | null> = Object.fromEntries(ids.map((id) => [id, null]));
    if (!user) return result;
    const { rows } = await this.pool.query<{ connector_id: string; status: string; scopes: string[] }>(
      `SELECT connector_id, status, scopes FROM connected_accounts WHERE connector_id = ANY($1::text[]) AND user_issuer = $2 AND user_subject = $3`,
      [ids, user.issuer, user.subject],
    );
    for (const row of rows) result[row.connector_id] = { status: row.status, scopes: row.scopes };
    return result;
  }
}
