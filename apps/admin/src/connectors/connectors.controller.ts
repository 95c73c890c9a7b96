import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query } from '@nestjs/common';
import { ApiBadRequestResponse, ApiConflictResponse, ApiCreatedResponse, ApiNoContentResponse, ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { AdminErrorDto, ValidationErrorDto } from '../common/error.dto';
import { PageQueryDto } from '../common/page-query.dto';
import { ConnectorsService } from './connectors.service';
import { ConnectorDto, ConnectorListDto, CreateConnectorDto, UpdateConnectorDto } from './dto/connector.dtos';

/** `/v1/connectors`: upstream APIs, their catalogues and write-only credentials. */
@Controller('v1/connectors')
@AdminApi('connectors')
export class ConnectorsController {
  constructor(private readonly connectors: ConnectorsService) {}

  /** Registers a connector. */
  @Post()
  @RequireRole('operator')
  @ApiCreatedResponse({ type: ConnectorDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @ApiConflictResponse({ type: AdminErrorDto })
  create(@CurrentAdmin() admin: AdminPrincipal, @Body() body: CreateConnectorDto): Promise<ConnectorDto> {
    return this.connectors.create(admin, body);
  }

  /** Lists connectors by id. */
  @Get()
  @ApiOkResponse({ type: ConnectorListDto })
  list(@Query() query: PageQueryDto): Promise<ConnectorListDto> {
    return this.connectors.list(query);
  }

  /** Reads one connector (its credential's type and fingerprint only). */
  @Get(':id')
  @ApiOkResponse({ type: ConnectorDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  get(@Param('id') id: string): Promise<ConnectorDto> {
    return this.connectors.get(id);
  }

  /** Changes a connector or rotates its credential. */
  @Patch(':id')
  @RequireRole('operator')
  @ApiOkResponse({ type: ConnectorDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  update(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @Body() body: UpdateConnectorDto): Promise<ConnectorDto> {
    return this.connectors.update(admin, id, body);
  }

  /** Revokes every credential issued for the connector, then removes it. */
  @Delete(':id')
  @HttpCode(204)
  @RequireRole('operator')
  @ApiNoContentResponse()
  @ApiNotFoundResponse({ type: AdminErrorDto })
  remove(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string): Promise<void> {
    return this.connectors.remove(admin, id);
  }
}
