import { grantsIssuedSql } from '@writ/grants';
import { GrantStore } from '@writ/grants';
import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { AgentEntity, ConnectorEntity, ConnectorOperation, PG_POOL, RowOf } from '@writ/database';
import type { TaskRow } from '@writ/grants';
import type { PolicyFacts } from '@writ/policy';

/** A stored task with its agent, as the policy input needs them. */
export interface DryRunSubject {
  task: PolicyFacts['task'];
  agent: PolicyFacts['agent'];
}

/** A connector's catalogue as the policy input needs it. */
export interface CatalogueEntry {
  id: string;
  name: string;
  operations: ConnectorOperation[];
}

/** A task row with its agent's name and status (null: the agent was deleted). */
type SubjectRow = Omit<TaskRow, 'status_reason' | 'ended_at'> & { agent_name: string | null; agent_status: AgentEntity['status'] | null };

/** The reads behind a policy dry run (the same facts token exchange reads, without caching). */
@Injectable()
export class PolicyFactsReader {
  constructor(@Inject(PG_POOL) private readonly pool: Pool) {}

  /** The task and its agent, or undefined for an unknown task. A deleted agent shows as status `deleted`. */
  async subject(taskId: string): Promise<DryRunSubject | undefined> {
    const { rows } = await this.pool.query<SubjectRow>(
      `SELECT t.id, t.agent_id, t.orchestrator_id, t.purpose, t.allowed, t.on_behalf_of, t.metadata, t.status,
              ${grantsIssuedSql('t')} AS grants_issued, t.refusals, t.out_of_purpose_requests, t.created_at, t.expires_at,
              a.name AS agent_name, a.status AS agent_status
         FROM tasks t LEFT JOIN agents a ON a.id = t.agent_id WHERE t.id = $1`,
      [taskId],
    );
    const row = rows[0];
    if (!row) return undefined;
    return {
      task: {
        id: row.id,
        agentId: row.agent_id,
        orchestratorId: row.orchestrator_id,
        purpose: row.purpose,
        status: row.status,
        allowed: row.allowed,
        createdAt: row.created_at,
        expiresAt: row.expires_at,
        onBehalfOf: row.on_behalf_of,
        metadata: row.metadata,
        grantsIssued: row.grants_issued,
        refusals: row.refusals,
        outOfPurposeRequests: row.out_of_purpose_requests,
        budgets: await new GrantStore(this.pool).budgetsOf(row.id),
      },
      agent: { id: row.agent_id, name: row.agent_name ?? row.agent_id, status: row.agent_status ?? 'deleted' },
    };
  }

  /** The registered connectors among `ids`. */
  async connectors(ids: string[]): Promise<CatalogueEntry[]> {
    const { rows } = await this.pool.query<Pick<RowOf<ConnectorEntity>, 'id' | 'name' | 'operations'>>(
      `SELECT id, name, operations FROM connectors WHERE id = ANY($1::text[])`,
      [ids],
    );
    return rows.map((row) => ({ id: row.id, name: row.name, operations: row.operations }));
  }
}
