import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query } from '@nestjs/common';
import { ApiBadRequestResponse, ApiConflictResponse, ApiCreatedResponse, ApiNoContentResponse, ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { AdminErrorDto, ValidationErrorDto } from '../common/error.dto';
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
  @Post()
  @RequireRole('operator')
  @ApiCreatedResponse({ type: AgentDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @ApiConflictResponse({ type: AdminErrorDto, description: 'the id is taken by an agent or an orchestrator' })
  create(@CurrentAdmin() admin: AdminPrincipal, @Body() body: CreateAgentDto): Promise<AgentDto> {
    return this.agents.create(admin, body);
  }

  /** Lists agents by id. */
  @Get()
  @ApiOkResponse({ type: AgentListDto })
  list(@Query() query: ListClientsQueryDto): Promise<AgentListDto> {
    return this.agents.list(query);
  }

  /** Reads one agent. */
  @Get(':id')
  @ApiOkResponse({ type: AgentDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  get(@Param('id') id: string): Promise<AgentDto> {
    return this.agents.get(id);
  }

  /** Changes an agent; `status: suspended` revokes its live credentials. */
  @Patch(':id')
  @RequireRole('operator')
  @ApiOkResponse({ type: AgentDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  update(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @Body() body: UpdateAgentDto): Promise<AgentDto> {
    return this.agents.update(admin, id, body);
  }

  /** Removes an agent, ending its active tasks and revoking its credentials. */
  @Delete(':id')
  @HttpCode(204)
  @RequireRole('operator')
  @ApiNoContentResponse()
  @ApiNotFoundResponse({ type: AdminErrorDto })
  remove(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string): Promise<void> {
    return this.agents.remove(admin, id);
  }
}
