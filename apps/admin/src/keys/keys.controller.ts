import { Controller, Get, Post, Query } from '@nestjs/common';
import { ApiBadRequestResponse, ApiCreatedResponse, ApiOkResponse } from '@nestjs/swagger';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { IdempotencyKey, IdempotentCreate, type IdempotentRequest } from '../common/idempotency';
import { ValidationErrorDto } from '../common/error.dto';
import { PageQueryDto } from '../common/page-query.dto';
import { RotatedKeyDto, SigningKeyListDto } from './dto/signing-key.dto';
import { KeysService } from './keys.service';

/** `/v1/keys`: Writ's token signing keys. */
@Controller('v1/keys')
@AdminApi('keys')
export class KeysController {
  constructor(private readonly keys: KeysService) {}

  /** The signing keys, newest first, in cursor pages (never private material). */
  @Get()
  @ApiOkResponse({ type: SigningKeyListDto })
  list(@Query() query: PageQueryDto): Promise<SigningKeyListDto> {
    return this.keys.list(query);
  }

  /** Rotates: a new active key; the old one keeps verifying. Safe to retry with an `Idempotency-Key`. */
  @Post('rotate')
  @RequireRole('admin')
  @ApiCreatedResponse({ type: RotatedKeyDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto, description: 'a malformed Idempotency-Key' })
  @IdempotentCreate(undefined, { noun: 'rotation', nothing: 'rotates nothing' })
  rotate(@CurrentAdmin() admin: AdminPrincipal, @IdempotencyKey('POST /v1/keys/rotate') idempotency: IdempotentRequest | undefined): Promise<RotatedKeyDto> {
    return this.keys.rotate(admin, idempotency);
  }
}
