import { Body, Controller, Param, Query } from '@nestjs/common';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { IfMatch, IfMatchHeader } from '../common/entity-tag';
import { IdempotencyKey, type IdempotentRequest } from '../common/idempotency';
import { ConditionalChange, CreateEndpoint, ListEndpoint, ReadEndpoint, RemoveEndpoint, UpdateEndpoint } from '../common/resource-endpoints.decorator';
import { ListClientsQueryDto } from '../common/list-clients-query.dto';
import { AgentsService } from './agents.service';
import { AgentDto, AgentListDto } from './dto/agent.dto';
import { CreateAgentDto } from './dto/create-agent.dto';
import { UpdateAgentDto } from './dto/update-agent.dto';

/** `/v1/agents`: the OAuth clients that act. */
@Controller('v1/agents')
@AdminApi('agents')
export class AgentsController {
  constructor(private readonly agents: AgentsService) {}

  /** Registers an agent. */
  @CreateEndpoint(AgentDto, 'the id is taken by an agent or an orchestrator')
  create(
    @CurrentAdmin() admin: AdminPrincipal,
    @Body() body: CreateAgentDto,
    @IdempotencyKey('POST /v1/agents') idempotency: IdempotentRequest | undefined,
  ): Promise<AgentDto> {
    return this.agents.create(admin, body, idempotency);
  }

  /** Lists agents by id. */
  @ListEndpoint(AgentListDto)
  list(@Query() query: ListClientsQueryDto): Promise<AgentListDto> {
    return this.agents.list(query);
  }

  /** Reads one agent. */
  @ReadEndpoint(AgentDto)
  get(@Param('id') id: string): Promise<AgentDto> {
    return this.agents.get(id);
  }

  /** Changes an agent; `status: suspended` revokes its live credentials. */
  @UpdateEndpoint(AgentDto)
  @ConditionalChange()
  update(
    @CurrentAdmin() admin: AdminPrincipal,
    @Param('id') id: string,
    @Body() body: UpdateAgentDto,
    @IfMatchHeader() ifMatch: IfMatch | undefined,
  ): Promise<AgentDto> {
    return this.agents.update(admin, id, body, ifMatch);
  }

  /** Removes an agent, ending its active tasks and revoking its credentials. */
  @RemoveEndpoint()
  @ConditionalChange()
  remove(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @IfMatchHeader() ifMatch: IfMatch | undefined): Promise<void> {
    return this.agents.remove(admin, id, ifMatch);
  }
}
