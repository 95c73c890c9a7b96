import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import { AuditEventInput, AuditService } from '@writ/audit';
import { CredentialRevoker, GrantStore, RowIntegrity, taskEndEvents } from '@writ/grants';
import { AgentEntity, RowOf } from '@writ/database';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { adminChange } from '../auth/admin-change';
import { kidsOf, publicJwksOrRefuse } from '../common/client-identity';
import { ClientRegistry } from '../common/client-registry';
import type { IfMatch } from '../common/entity-tag';
import { AdminIdempotency, idempotent, type IdempotencyClaim, type IdempotentRequest } from '../common/idempotency';
import type { Page } from '../common/cursor';
import type { ListClientsQueryDto } from '../common/list-clients-query.dto';
import { tokensRevokedEvents } from '../common/revocation-events';
import { AgentDto, toAgentDto } from './dto/agent.dto';
import type { CreateAgentDto } from './dto/create-agent.dto';
import type { UpdateAgentDto } from './dto/update-agent.dto';

/**
 * Registers, changes and removes agents. Each change commits with its audit event; a
 * suspension or deletion revokes the agent's live credentials in that same transaction.
 */
@Injectable()
export class AgentsService {
  private readonly registry: ClientRegistry<AgentEntity, RowOf<AgentEntity>, AgentDto>;

  constructor(
    @InjectRepository(AgentEntity) repository: Repository<AgentEntity>,
    private readonly audit: AuditService,
    private readonly revoker: CredentialRevoker,
    private readonly grants: GrantStore,
    integrity: RowIntegrity,
    private readonly idempotency: AdminIdempotency,
  ) {
    this.registry = new ClientRegistry(repository, { table: 'agents', noun: 'agent', idPrefix: 'agent', extraColumns: [], toDto: toAgentDto }, integrity);
  }

  /**
   * Registers an agent (`409` when the id is taken by an agent or an orchestrator); once per
   * `Idempotency-Key` (see {@link AdminIdempotency}).
   */
  create(principal: AdminPrincipal, body: CreateAgentDto, request?: IdempotentRequest): Promise<AgentDto> {
    return this.idempotency.run(request, (claim) => this.register(principal, body, claim));
  }

  private async register(principal: AdminPrincipal, body: CreateAgentDto, claim: IdempotencyClaim | undefined): Promise<AgentDto> {
    const jwks = publicJwksOrRefuse(body.jwks);
    const { result } = await this.audit.recordWith(
      idempotent(
        claim,
        adminChange(principal, (client) => this.registry.insert(client, body, jwks)),
      ),
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
  list(query: ListClientsQueryDto): Promise<Page<AgentDto>> {
    return this.registry.list(query);
  }

  /** One agent, or `404`. */
  get(id: string): Promise<AgentDto> {
    return this.registry.get(id);
  }

  /** Changes an agent; suspending it revokes its live credentials in the same transaction. */
  async update(principal: AdminPrincipal, id: string, body: UpdateAgentDto, ifMatch?: IfMatch): Promise<AgentDto> {
    const jwks = body.jwks !== undefined ? publicJwksOrRefuse(body.jwks) : undefined;
    const { result } = await this.audit.recordWith(
      adminChange(principal, async (client) => {
        const before = await this.registry.lock(client, id, ifMatch);
        const { changed, statusChange } = this.registry.changes(before, body, jwks);
        if (changed.length === 0 && !statusChange) return { agent: toAgentDto(before), changed, statusChange, jtis: [] as string[] };
        const after = await this.registry.update(client, before, body, jwks);
        const jtis = statusChange === 'suspended' ? await this.revoker.revokeForAgent(client, id, 'agent suspended') : [];
        return { agent: toAgentDto(after), changed, statusChange, jtis };
      }),
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
  async remove(principal: AdminPrincipal, id: string, ifMatch?: IfMatch): Promise<void> {
    await this.audit.recordWith(
      adminChange(principal, async (client) => {
        await this.registry.lock(client, id, ifMatch);
        const tasks = await this.grants.revokeTasksOfAgent(client, id, 'agent deleted');
        const jtis = await this.revoker.revokeForAgent(client, id, 'agent deleted');
        await this.registry.delete(client, id);
        return { tasks, jtis };
      }),
      ({ tasks, jtis }) => {
        const actor = adminActor(principal);
        // A task past its deadline ended then: `task.expired`, as the sweep would have written it.
        const expired = tasks.filter((task) => task.status === 'expired').map((task) => task.id);
        return [
          {
            type: 'admin.agent.deleted',
            outcome: 'success',
            actor,
            agentId: id,
            data: {
              tasks_revoked: tasks.filter((task) => task.status === 'revoked').map((task) => task.id),
              ...(expired.length > 0 ? { tasks_expired: expired } : {}),
              tokens_revoked: jtis.length,
            },
          },
          ...tasks.flatMap((task) => taskEndEvents(task.id, 'revoked', actor, { ...task, jtis: [] })),
          ...tokensRevokedEvents(principal, jtis, 'agent deleted', { agentId: id }),
        ];
      },
    );
  }
}
