import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query } from '@nestjs/common';
import { ApiBadRequestResponse, ApiConflictResponse, ApiCreatedResponse, ApiNoContentResponse, ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { AdminErrorDto, ValidationErrorDto } from '../common/error.dto';
import { ListClientsQueryDto } from '../common/list-clients-query.dto';
import { CreateOrchestratorDto, OrchestratorDto, OrchestratorListDto, UpdateOrchestratorDto } from './dto/orchestrator.dtos';
import { OrchestratorsService } from './orchestrators.service';

/** `/v1/orchestrators`: the trusted services that declare tasks. */
@Controller('v1/orchestrators')
@AdminApi('orchestrators')
export class OrchestratorsController {
  constructor(private readonly orchestrators: OrchestratorsService) {}

  /** Registers an orchestrator. */
  @Post()
  @RequireRole('operator')
  @ApiCreatedResponse({ type: OrchestratorDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @ApiConflictResponse({ type: AdminErrorDto })
  create(@CurrentAdmin() admin: AdminPrincipal, @Body() body: CreateOrchestratorDto): Promise<OrchestratorDto> {
    return this.orchestrators.create(admin, body);
  }

  /** Lists orchestrators by id. */
  @Get()
  @ApiOkResponse({ type: OrchestratorListDto })
  list(@Query() query: ListClientsQueryDto): Promise<OrchestratorListDto> {
    return this.orchestrators.list(query);
  }

  /** Reads one orchestrator. */
  @Get(':id')
  @ApiOkResponse({ type: OrchestratorDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  get(@Param('id') id: string): Promise<OrchestratorDto> {
    return this.orchestrators.get(id);
  }

  /** Changes an orchestrator. */
  @Patch(':id')
  @RequireRole('operator')
  @ApiOkResponse({ type: OrchestratorDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  update(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @Body() body: UpdateOrchestratorDto): Promise<OrchestratorDto> {
    return this.orchestrators.update(admin, id, body);
  }

  /** Removes an orchestrator. */
  @Delete(':id')
  @HttpCode(204)
  @RequireRole('operator')
  @ApiNoContentResponse()
  @ApiNotFoundResponse({ type: AdminErrorDto })
  remove(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string): Promise<void> {
    return this.orchestrators.remove(admin, id);
  }
}
