import { Body, Controller, Param, Query } from '@nestjs/common';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { IfMatch, IfMatchHeader } from '../common/entity-tag';
import { IdempotencyKey, type IdempotentRequest } from '../common/idempotency';
import { ConditionalChange, CreateEndpoint, ListEndpoint, ReadEndpoint, RemoveEndpoint, UpdateEndpoint } from '../common/resource-endpoints.decorator';
import { PageQueryDto } from '../common/page-query.dto';
import { ConnectorsService } from './connectors.service';
import { ConnectorDto, ConnectorListDto, CreateConnectorDto, UpdateConnectorDto } from './dto/connector.dtos';

/** `/v1/connectors`: upstream APIs, their catalogues and write-only credentials. */
@Controller('v1/connectors')
@AdminApi('connectors')
export class ConnectorsController {
  constructor(private readonly connectors: ConnectorsService) {}

  /** Registers a connector. */
  @CreateEndpoint(ConnectorDto)
  create(
    @CurrentAdmin() admin: AdminPrincipal,
    @Body() body: CreateConnectorDto,
    @IdempotencyKey('POST /v1/connectors') idempotency: IdempotentRequest | undefined,
  ): Promise<ConnectorDto> {
    return this.connectors.create(admin, body, idempotency);
  }

  /** Lists connectors by id. */
  @ListEndpoint(ConnectorListDto)
  list(@Query() query: PageQueryDto): Promise<ConnectorListDto> {
    return this.connectors.list(query);
  }

  /** Reads one connector (its credential's type and fingerprint only). */
  @ReadEndpoint(ConnectorDto)
  get(@Param('id') id: string): Promise<ConnectorDto> {
    return this.connectors.get(id);
  }

  /** Changes a connector or rotates its credential. */
  @UpdateEndpoint(ConnectorDto)
  @ConditionalChange()
  update(
    @CurrentAdmin() admin: AdminPrincipal,
    @Param('id') id: string,
    @Body() body: UpdateConnectorDto,
    @IfMatchHeader() ifMatch: IfMatch | undefined,
  ): Promise<ConnectorDto> {
    return this.connectors.update(admin, id, body, ifMatch);
  }

  /** Revokes every credential issued for the connector and every user's connected account to it (at the upstream too), then removes it. */
  @RemoveEndpoint()
  @ConditionalChange()
  remove(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @IfMatchHeader() ifMatch: IfMatch | undefined): Promise<void> {
    return this.connectors.remove(admin, id, ifMatch);
  }
}
