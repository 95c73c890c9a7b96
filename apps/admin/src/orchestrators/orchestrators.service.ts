import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import { GrantStore, RowIntegrity } from '@writ/grants';
import { AuditEventInput, AuditService } from '@writ/audit';
import { OrchestratorEntity, RowOf } from '@writ/database';
import { ConflictError } from '@writ/platform';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { adminChange } from '../auth/admin-change';
import { claimClientId, kidsOf, publicJwksOrRefuse } from '../common/client-identity';
import { ClientRegistry } from '../common/client-registry';
import type { IfMatch } from '../common/entity-tag';
import { AdminIdempotency, idempotent, type IdempotencyClaim, type IdempotentRequest } from '../common/idempotency';
import type { Page } from '../common/cursor';
import type { ListClientsQueryDto } from '../common/list-clients-query.dto';
import { tokensRevokedEvents } from '../common/revocation-events';
import { CreateOrchestratorDto, OrchestratorDto, toOrchestratorDto, UpdateOrchestratorDto } from './dto/orchestrator.dtos';

/**
 * Registers, changes and removes orchestrators. A suspension or deletion revokes the
 * orchestrator's Tasks API tokens in the transaction of the change and its events; the tasks
 * it declared run on until they end or expire.
 */
@Injectable()
export class OrchestratorsService {
  private readonly registry: ClientRegistry<OrchestratorEntity, RowOf<OrchestratorEntity>, OrchestratorDto>;

  constructor(
    @InjectRepository(OrchestratorEntity) repository: Repository<OrchestratorEntity>,
    private readonly audit: AuditService,
    private readonly grants: GrantStore,
    integrity: RowIntegrity,
    private readonly idempotency: AdminIdempotency,
  ) {
    this.registry = new ClientRegistry(
      repository,
      {
        table: 'orchestrators',
        noun: 'orchestrator',
        idPrefix: 'orch',
        extraColumns: ['allowed_agents'],
        toDto: toOrchestratorDto,
      },
      integrity,
    );
  }

  /**
   * Registers an orchestrator (`409` when the id is taken by an agent or an orchestrator, or
   * declared tasks under an earlier registration); once per `Idempotency-Key` (see
   * {@link AdminIdempotency}).
   */
  create(principal: AdminPrincipal, body: CreateOrchestratorDto, request?: IdempotentRequest): Promise<OrchestratorDto> {
    return this.idempotency.run(request, (claim) => this.register(principal, body, claim));
  }

  private async register(principal: AdminPrincipal, body: CreateOrchestratorDto, claim: IdempotencyClaim | undefined): Promise<OrchestratorDto> {
    const jwks = publicJwksOrRefuse(body.jwks);
    const { result } = await this.audit.recordWith(
      idempotent(
        claim,
        adminChange(principal, async (client) => {
          // A deleted orchestrator's tasks run on, and the Tasks API knows their orchestrator by id:
          // registered again, the id would read and end them, and get their task tokens by replaying
          // their Idempotency-Keys. Once the id is claimed no orchestrator has it, so none can declare
          // a task under it before this commits.
          if (body.id !== undefined) {
            await claimClientId(client, body.id);
            if ((await client.query('SELECT 1 FROM tasks WHERE orchestrator_id = $1 LIMIT 1', [body.id])).rowCount) {
              throw new ConflictError(`the id ${body.id} declared tasks under an earlier registration: register the orchestrator under another id`);
            }
          }
          return this.registry.insert(client, body, jwks, { allowed_agents: body.allowed_agents ?? [] });
        }),
      ),
      (orchestrator) => [
        {
          type: 'admin.orchestrator.created',
          outcome: 'success',
          actor: adminActor(principal),
          data: { id: orchestrator.id, name: orchestrator.name, allowed_agents: orchestrator.allowed_agents, kids: kidsOf(jwks) },
        },
      ],
    );
    return result;
  }

  /** A page of orchestrators, by id. */
  list(query: ListClientsQueryDto): Promise<Page<OrchestratorDto>> {
    return this.registry.list(query);
  }

  /** One orchestrator, or `404`. */
  get(id: string): Promise<OrchestratorDto> {
    return this.registry.get(id);
  }

  /** Changes an orchestrator; suspending it revokes its Tasks API tokens. */
  async update(principal: AdminPrincipal, id: string, body: UpdateOrchestratorDto, ifMatch?: IfMatch): Promise<OrchestratorDto> {
    const jwks = body.jwks !== undefined ? publicJwksOrRefuse(body.jwks) : undefined;
    const { result } = await this.audit.recordWith(
      adminChange(principal, async (client) => {
        const before = await this.registry.lock(client, id, ifMatch);
        const extra = { allowed_agents: body.allowed_agents };
        const { changed, statusChange } = this.registry.changes(before, body, jwks, extra);
        if (changed.length === 0 && !statusChange) return { orchestrator: toOrchestratorDto(before), changed, statusChange, jtis: [] as string[] };
        const after = await this.registry.update(client, before, body, jwks, extra);
        const jtis = statusChange === 'suspended' ? await this.grants.revokeTasksTokensOf(client, id, 'orchestrator suspended') : [];
        return { orchestrator: toOrchestratorDto(after), changed, statusChange, jtis };
      }),
      ({ orchestrator, changed, statusChange, jtis }) => {
        const actor = adminActor(principal);
        const events: AuditEventInput[] = [];
        if (changed.length > 0) {
          events.push({
            type: 'admin.orchestrator.updated',
            outcome: 'success',
            actor,
            data: {
              id,
              changed,
              ...(changed.includes('allowed_agents') ? { allowed_agents: orchestrator.allowed_agents } : {}),
              ...(changed.includes('jwks') ? { kids: (orchestrator.jwks as { keys: Array<{ kid: string }> }).keys.map((k) => k.kid) } : {}),
            },
          });
        }
        if (statusChange === 'suspended') {
          events.push({ type: 'admin.orchestrator.suspended', outcome: 'success', actor, data: { id, tokens_revoked: jtis.length } });
          events.push(...tokensRevokedEvents(principal, jtis, 'orchestrator suspended', {}));
        } else if (statusChange === 'active') {
          events.push({ type: 'admin.orchestrator.reactivated', outcome: 'success', actor, data: { id } });
        }
        return events;
      },
    );
    return result.orchestrator;
  }

  /** Removes an orchestrator and revokes its Tasks API tokens. */
  async remove(principal: AdminPrincipal, id: string, ifMatch?: IfMatch): Promise<void> {
    await this.audit.recordWith(
      adminChange(principal, async (client) => {
        await this.registry.lock(client, id, ifMatch);
        const jtis = await this.grants.revokeTasksTokensOf(client, id, 'orchestrator deleted');
        await this.registry.delete(client, id);
        return jtis;
      }),
      (jtis) => [
        { type: 'admin.orchestrator.deleted', outcome: 'success', actor: adminActor(principal), data: { id, tokens_revoked: jtis.length } },
        ...tokensRevokedEvents(principal, jtis, 'orchestrator deleted', {}),
      ],
    );
  }
}
