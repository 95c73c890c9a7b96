import { Body, Controller, Delete, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiCreatedResponse, ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import { AdminErrorDto } from '../common/error.dto';
import type { ConnectionView, ConnectLink } from '@writ/accounts';
import { NoStore } from '@writ/platform';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { IdempotencyKey, IdempotentCreate, type IdempotentRequest } from '../common/idempotency';
import { CreateEndpoint, ListEndpoint, RemoveEndpoint } from '../common/resource-endpoints.decorator';
import {
  ConnectionListDto,
  ConnectionQueryDto,
  CreateAdminConnectLinkDto,
  CreateIdentityProviderDto,
  IdentityProviderDto,
  IdentityProviderListDto,
  ListIdentityProvidersQueryDto,
} from './connection.dtos';
import { ConnectionsService } from './connections.service';

/**
 * `/v1/identity-providers`: the issuers whose user tokens prove who a task acts for. Changing them
 * needs the `admin` role: a provider (its keys, the orchestrators that may assert its users)
 * decides whose connected accounts a task may use, so an operator who could replace one could act
 * as any connected user.
 */
@Controller('v1/identity-providers')
@AdminApi('identity-providers')
export class IdentityProvidersController {
  constructor(private readonly connections: ConnectionsService) {}

  /** Registers a trusted identity provider. */
  @CreateEndpoint(IdentityProviderDto, 'the issuer (or another spelling of it) is already registered', 'admin')
  create(
    @CurrentAdmin() admin: AdminPrincipal,
    @Body() body: CreateIdentityProviderDto,
    @IdempotencyKey('POST /v1/identity-providers') idempotency: IdempotentRequest | undefined,
  ): Promise<IdentityProviderDto> {
    return this.connections.createProvider(admin, body, idempotency);
  }

  /** Lists the trusted identity providers, by issuer, in cursor pages. */
  @ListEndpoint(IdentityProviderListDto)
  list(@Query() query: ListIdentityProvidersQueryDto): Promise<IdentityProviderListDto> {
    return this.connections.listProviders(query);
  }

  /** Removes one (the issuer URL-encoded in the path). */
  @RemoveEndpoint('admin')
  remove(@CurrentAdmin() admin: AdminPrincipal, @Param('id') issuer: string): Promise<void> {
    return this.connections.removeProvider(admin, issuer);
  }
}

/** `/v1/connections`: users' connected accounts (never their tokens). */
@Controller('v1/connections')
@AdminApi('connections')
export class AdminConnectionsController {
  constructor(private readonly connections: ConnectionsService) {}

  /** Lists connections, newest first, by connector and/or user, in cursor pages. */
  @ListEndpoint(ConnectionListDto)
  list(@Query() query: ConnectionQueryDto): Promise<ConnectionListDto> {
    return this.connections.list(query);
  }

  /** Issues a one-time connect link (10 minutes) for a user of a registered identity provider. */
  @Post('links')
  @RequireRole('operator')
  @NoStore()
  @ApiCreatedResponse({
    description: 'the one-time link: `{url, expires_at, connector_id, user}` (a replay under its Idempotency-Key: the same without `url`)',
  })
  @ApiNotFoundResponse({ type: AdminErrorDto, description: 'no such connector' })
  @IdempotentCreate('url')
  createLink(
    @CurrentAdmin() admin: AdminPrincipal,
    @Body() body: CreateAdminConnectLinkDto,
    @IdempotencyKey('POST /v1/connections/links') idempotency: IdempotentRequest | undefined,
  ): Promise<ConnectLink | Omit<ConnectLink, 'url'>> {
    return this.connections.createLink(admin, body, idempotency);
  }

  /** Disconnects: removes the connection and revokes it at the upstream; answers the revocation result. */
  @Delete(':id')
  @HttpCode(200)
  @RequireRole('operator')
  @ApiOkResponse({ description: 'the removed connection and `upstream_revocation`' })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  disconnect(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string): Promise<ConnectionView & { upstream_revocation: string }> {
    return this.connections.disconnect(admin, id);
  }
}
