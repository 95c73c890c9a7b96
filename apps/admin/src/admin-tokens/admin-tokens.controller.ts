import { Body, Controller, Delete, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import {
  ApiBadRequestResponse,
  ApiConflictResponse,
  ApiCreatedResponse,
  ApiNoContentResponse,
  ApiNotFoundResponse,
  ApiOkResponse,
  ApiOperation,
} from '@nestjs/swagger';
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

  /** Revokes a token and every token descended from it (the tokens it created, theirs...). */
  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({
    summary: 'Revoke an admin token and its descendants',
    description:
      'Revokes the token and, in the same transaction, every token descended from it through `created_by` (the tokens it created, the tokens those created...) ' +
      'that is not revoked yet, as Vault revokes a token with its children: each stops working when this answers. ' +
      'A creation made with one of them either committed before (and is revoked with the tree) or is refused with `401`. ' +
      'Recorded as `admin.admin_token.revoked` with `descendants` (their ids) and `descendant_count`. ' +
      'Revoking a revoked token again revokes the descendants still live and changes nothing else.',
  })
  @ApiNoContentResponse({ description: 'the token and its descendants are revoked' })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  @ApiConflictResponse({
    type: AdminErrorDto,
    description: 'the token making the request cannot revoke itself, nor a token it descends from (that would revoke it too): use a token outside the tree',
  })
  revoke(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string): Promise<void> {
    return this.tokens.revoke(admin, id);
  }
}
