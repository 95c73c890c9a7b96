import { Body, Controller, Param, Query } from '@nestjs/common';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { IfMatch, IfMatchHeader } from '../common/entity-tag';
import { IdempotencyKey, type IdempotentRequest } from '../common/idempotency';
import { ConditionalChange, CreateEndpoint, ListEndpoint, ReadEndpoint, RemoveEndpoint, UpdateEndpoint } from '../common/resource-endpoints.decorator';
import { ListClientsQueryDto } from '../common/list-clients-query.dto';
import { CreateOrchestratorDto, OrchestratorDto, OrchestratorListDto, UpdateOrchestratorDto } from './dto/orchestrator.dtos';
import { OrchestratorsService } from './orchestrators.service';

/** `/v1/orchestrators`: the trusted services that declare tasks. */
@Controller('v1/orchestrators')
@AdminApi('orchestrators')
export class OrchestratorsController {
  constructor(private readonly orchestrators: OrchestratorsService) {}

  /** Registers an orchestrator. */
  @CreateEndpoint(OrchestratorDto)
  create(
    @CurrentAdmin() admin: AdminPrincipal,
    @Body() body: CreateOrchestratorDto,
    @IdempotencyKey('POST /v1/orchestrators') idempotency: IdempotentRequest | undefined,
  ): Promise<OrchestratorDto> {
    return this.orchestrators.create(admin, body, idempotency);
  }

  /** Lists orchestrators by id. */
  @ListEndpoint(OrchestratorListDto)
  list(@Query() query: ListClientsQueryDto): Promise<OrchestratorListDto> {
    return this.orchestrators.list(query);
  }

  /** Reads one orchestrator. */
  @ReadEndpoint(OrchestratorDto)
  get(@Param('id') id: string): Promise<OrchestratorDto> {
    return this.orchestrators.get(id);
  }

  /** Changes an orchestrator. */
  @UpdateEndpoint(OrchestratorDto)
  @ConditionalChange()
  update(
    @CurrentAdmin() admin: AdminPrincipal,
    @Param('id') id: string,
    @Body() body: UpdateOrchestratorDto,
    @IfMatchHeader() ifMatch: IfMatch | undefined,
  ): Promise<OrchestratorDto> {
    return this.orchestrators.update(admin, id, body, ifMatch);
  }

  /** Removes an orchestrator. */
  @RemoveEndpoint()
  @ConditionalChange()
  remove(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @IfMatchHeader() ifMatch: IfMatch | undefined): Promise<void> {
    return this.orchestrators.remove(admin, id, ifMatch);
  }
}
