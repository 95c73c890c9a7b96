import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiBadRequestResponse, ApiConflictResponse, ApiCreatedResponse, ApiNoContentResponse, ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import { NoStore } from '@writ/platform';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { AdminErrorDto, ValidationErrorDto } from '../common/error.dto';
import { IdempotencyKey, IdempotentCreate, type IdempotentRequest } from '../common/idempotency';
import { PageQueryDto } from '../common/page-query.dto';
import { AdminTokensService } from './admin-tokens.service';
import { AdminSelfDto, AdminTokenListDto, CreatedAdminTokenDto } from './dto/admin-token.dto';
import { CreateAdminTokenDto } from './dto/create-admin-token.dto';

/** `/v1/admin-tokens`: admin role only, listing included. */
@Controller('v1/admin-tokens')
@AdminApi('admin tokens')
@RequireRole('admin')
export class AdminTokensController {
  constructor(private readonly tokens: AdminTokensService) {}

  /** Creates a token; the answer is the only time it is shown. */
  @Post()
  @NoStore()
  @ApiCreatedResponse({ type: CreatedAdminTokenDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @IdempotentCreate('token')
  create(
    @CurrentAdmin() admin: AdminPrincipal,
    @Body() body: CreateAdminTokenDto,
    @IdempotencyKey('POST /v1/admin-tokens') idempotency: IdempotentRequest | undefined,
  ): Promise<CreatedAdminTokenDto | Omit<CreatedAdminTokenDto, 'token'>> {
    return this.tokens.create(admin, body, idempotency);
  }

  /** Lists tokens (never the token, never its hash). */
  @Get()
  @ApiOkResponse({ type: AdminTokenListDto })
  list(@Query() query: PageQueryDto): Promise<AdminTokenListDto> {
    return this.tokens.list(query);
  }

  /**
   * The token this request is made with: its id, name and role (any role). The console
   * reads it after sign-in to show only the controls the role may use.
   */
  @Get('self')
  @RequireRole('viewer')
  @ApiOkResponse({ type: AdminSelfDto })
  self(@CurrentAdmin() admin: AdminPrincipal): AdminSelfDto {
    return { id: admin.id, name: admin.name, role: admin.role };
  }

  /** Revokes a token. */
  @Delete(':id')
  @HttpCode(204)
  @ApiNoContentResponse()
  @ApiNotFoundResponse({ type: AdminErrorDto })
  @ApiConflictResponse({ type: AdminErrorDto, description: 'the token making the request cannot revoke itself' })
  revoke(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string): Promise<void> {
    return this.tokens.revoke(admin, id);
  }
}
