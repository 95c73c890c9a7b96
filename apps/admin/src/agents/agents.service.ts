import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { AuditEventInput, AuditService } from '@writ/audit';
import { CredentialRevoker, GrantStore } from '@writ/grants';
import { AgentEntity, PG_POOL, RowOf } from '@writ/database';
import { NotFoundError } from '@writ/platform';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { claimClientId, generateClientId, kidsOf, publicJwksOrRefuse } from '../common/client-identity';
import { decodeCursor, encodeCursor, isKeyCursor, Page } from '../common/cursor';
import type { ListClientsQueryDto } from '../common/list-clients-query.dto';
import { DEFAULT_PAGE_SIZE } from '../common/page-query.dto';
import { tokensRevokedEvents } from '../common/revocation-events';
import { AgentDto, toAgentDto } from './dto/agent.dto';
import type { CreateAgentDto } from './dto/create-agent.dto';
import type { UpdateAgentDto } from './dto/update-agent.dto';

/** A row of the table, as {@link COLUMNS} selects it. */
type Row = RowOf<AgentEntity>;

const COLUMNS = 'id, name, description, status, jwks, created_at, updated_at';

/**
 * Registers, changes and removes agents. Each change commits with its audit event; a
 * suspension or deletion revokes the agent's live credentials in that same transaction.
 */
@Injectable()
export class AgentsService {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly audit: AuditService,
    private readonly revoker: CredentialRevoker,
    private readonly grants: GrantStore,
  ) {}

  /** Registers an agent (`409` when the id is taken by an agent or an orchestrator). */
  async create(principal: AdminPrincipal, body: CreateAgentDto): Promise<AgentDto> {
    const jwks = publicJwksOrRefuse(body.jwks);
    const id = body.id ?? generateClientId('agent');
    const { result } = await this.audit.recordWith(
      async (client) => {
        await claimClientId(client, id);
        const { rows } = await client.query<Row>(
          `INSERT INTO agents (id, name, description, status, jwks) VALUES ($1, $2, $3, 'active', $4) RETURNING ${COLUMNS}`,
          [id, body.name, body.description ?? null, JSON.stringify(jwks)],
        );
        return toAgentDto(rows[0]);
      },
      (agent) => [
        {
          type: 'admin.agent.created',
          outcome: 'success',
          actor: adminActor(principal),
          agentId: agent.id,
          data: { name: agent.name, description: agent.description, status: agent.status, kids: kidsOf(jwks) },
        },
      ],
    );
    return result;
  }

  /** A page of agents, by id. */
  async list(query: ListClientsQueryDto): Promise<Page<AgentDto>> {
    const after = decodeCursor(query.cursor, isKeyCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    const { rows } = await this.pool.query<Row>(
      `SELECT ${COLUMNS} FROM agents
        WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR id > $2)
        ORDER BY id LIMIT $3`,
      [query.status ?? null, after?.k ?? null, limit + 1],
    );
    const items = rows.slice(0, limit).map(toAgentDto);
    return { items, next_cursor: rows.length > limit ? encodeCursor({ k: items[items.length - 1].id }) : null };
  }

  /** One agent, or `404`. */
  async get(id: string): Promise<AgentDto> {
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM agents WHERE id = $1`, [id]);
    if (!rows[0]) throw new NotFoundError('agent');
    return toAgentDto(rows[0]);
  }

  /** Changes an agent; suspending it revokes its live credentials in the same transaction. */
  async update(principal: AdminPrincipal, id: string, body: UpdateAgentDto): Promise<AgentDto> {
    const jwks = body.jwks !== undefined ? publicJwksOrRefuse(body.jwks) : undefined;
    const { result } = await this.audit.recordWith(
      async (client) => {
        const current = await client.query<Row>(`SELECT ${COLUMNS} FROM agents WHERE id = $1 FOR UPDATE`, [id]);
        const before = current.rows[0];
        if (!before) throw new NotFoundError('agent');
        const changed: string[] = [];
        if (body.name !== undefined && body.name !== before.name) changed.push('name');
        if (body.description !== undefined && (body.description ?? null) !== before.description) changed.push('description');
        if (jwks !== undefined && JSON.stringify(jwks) !== JSON.stringify(before.jwks)) changed.push('jwks');
        const statusChange = body.status !== undefined && body.status !== before.status ? body.status : undefined;
        if (changed.length === 0 && !statusChange) return { agent: toAgentDto(before), changed, statusChange, jtis: [] as string[] };
        const { rows } = await client.query<Row>(
          `UPDATE agents SET name = $2, description = $3, jwks = $4, status = $5, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
          [
            id,
            body.name ?? before.name,
            body.description !== undefined ? body.description : before.description,
            JSON.stringify(jwks ?? before.jwks),
            statusChange ?? before.status,
          ],
        );
        const jtis = statusChange === 'suspended' ? await this.revoker.revokeForAgent(client, id, 'agent suspended') : [];
        return { agent: toAgentDto(rows[0]), changed, statusChange, jtis };
      },
      ({ agent, changed, statusChange, jtis }) => {
        const actor = adminActor(principal);
        const events: AuditEventInput[] = [];
        if (changed.length > 0) {
          events.push({
            type: 'admin.agent.updated',
            outcome: 'success',
            actor,
            agentId: id,
            data: { changed, ...(changed.includes('jwks') ? { kids: (agent.jwks as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid) } : {}) },
          });
        }
        if (statusChange === 'suspended') {
          events.push({ type: 'admin.agent.suspended', outcome: 'success', actor, agentId: id, data: { tokens_revoked: jtis.length } });
          events.push(...tokensRevokedEvents(principal, jtis, 'agent suspended', { agentId: id }));
        } else if (statusChange === 'active') {
          events.push({ type: 'admin.agent.reactivated', outcome: 'success', actor, agentId: id, data: {} });
        }
        return events;
      },
    );
    return result.agent;
  }

  /**
   * Removes an agent: its active tasks end as `revoked` and its live credentials are revoked,
   * in the transaction that deletes it and records the events.
   */
  async remove(principal: AdminPrincipal, id: string): Promise<void> {
    await this.audit.recordWith(
      async (client) => {
        const current = await client.query('SELECT id FROM agents WHERE id = $1 FOR UPDATE', [id]);
        if (!current.rows[0]) throw new NotFoundError('agent');
        const tasks = await this.grants.revokeTasksOfAgent(client, id, 'agent deleted');
        const jtis = await this.revoker.revokeForAgent(client, id, 'agent deleted');
        await client.query('DELETE FROM agents WHERE id = $1', [id]);
        return { tasks, jtis };
      },
      ({ tasks, jtis }) => {
        const actor = adminActor(principal);
        return [
          { type: 'admin.agent.deleted', outcome: 'success', actor, agentId: id, data: { tasks_revoked: tasks, tokens_revoked: jtis.length } },
          ...tasks.map((taskId): AuditEventInput => ({
            type: 'task.revoked',
            outcome: 'success',
            actor,
            agentId: id,
            taskId,
            data: { status: 'revoked', reason: 'agent deleted' },
          })),
          ...tokensRevokedEvents(principal, jtis, 'agent deleted', { agentId: id }),
        ];
      },
    );
  }
}
