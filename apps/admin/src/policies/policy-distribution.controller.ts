import { Body, Controller, Delete, Get, HttpCode, Put, Query } from '@nestjs/common';
import { ApiBadRequestResponse, ApiBody, ApiConflictResponse, ApiConsumes, ApiOkResponse, ApiProperty } from '@nestjs/swagger';
import { IsObject } from 'class-validator';
import type { StoredPolicyInfo } from '@writ/platform';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { AdminErrorDto, ValidationErrorDto } from '../common/error.dto';
import { PageQueryDto } from '../common/page-query.dto';
import { PolicyDistributionService } from './policy-distribution.service';

/** `PUT /v1/policies/data`. */
export class PolicyDataDto {
  @ApiProperty({ type: 'object', additionalProperties: true, description: 'the whole data document, e.g. {"writ": {"config": {...}}}' })
  @IsObject()
  data!: Record<string, unknown>;
}

/** The stored policy now active on every instance. */
export class StoredPolicyDto {
  @ApiProperty({ description: 'SHA-256 of the module and its data' }) version!: string;
  @ApiProperty({ example: 'upload' }) source!: string;
  @ApiProperty({ example: 'admin:ops' }) loaded_by!: string;
  @ApiProperty({ format: 'date-time' }) loaded_at!: string;
}

/** One policy stored through the admin API (an upload or a data update), as listed in the history. */
export class StoredPolicyVersionDto extends StoredPolicyDto {
  @ApiProperty({ description: 'true for the version every instance runs now (none is active when the WRIT_POLICY file is in force)' }) active!: boolean;
}

/** `GET /v1/policies/history`: stored versions, newest first. */
export class PolicyHistoryDto {
  @ApiProperty({ type: [StoredPolicyVersionDto] }) items!: StoredPolicyVersionDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}

/** `/v1/policies/active`, `/v1/policies/data`: policy distribution through PostgreSQL (role `admin`). */
@Controller('v1/policies')
@AdminApi('policies')
export class PolicyDistributionController {
  constructor(private readonly distribution: PolicyDistributionService) {}

  /** Stored policy versions (uploads and data updates), newest first; the bundles themselves are not returned. */
  @Get('history')
  @ApiOkResponse({ type: PolicyHistoryDto })
  history(@Query() query: PageQueryDto): Promise<PolicyHistoryDto> {
    return this.distribution.history(query);
  }

  /** Uploads a compiled bundle; every instance swaps to it without a restart. */
  @Put('active')
  @RequireRole('admin')
  @ApiConsumes('application/gzip', 'application/wasm', 'application/octet-stream')
  @ApiBody({ schema: { type: 'string', format: 'binary' } })
  @ApiOkResponse({ type: StoredPolicyDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto, description: 'the bundle does not load or lacks writ/grant/decision; nothing changed' })
  activate(@CurrentAdmin() admin: AdminPrincipal, @Body() body: Buffer): Promise<StoredPolicyInfo> {
    return this.distribution.activateBundle(admin, body);
  }

  /** Reverts every instance to its `WRIT_POLICY` file (or the committed default). */
  @Delete('active')
  @HttpCode(204)
  @RequireRole('admin')
  async deactivate(@CurrentAdmin() admin: AdminPrincipal): Promise<void> {
    await this.distribution.deactivate(admin);
  }

  /** Replaces the policy data (limits, approval thresholds) over the module in force, without recompiling. */
  @Put('data')
  @RequireRole('admin')
  @ApiOkResponse({ type: StoredPolicyDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  @ApiConflictResponse({
    type: AdminErrorDto,
    description:
      'another admin changed the active policy meanwhile (send it again), or the active stored policy was not activated by Writ (its integrity tag does not verify); nothing changed',
  })
  data(@CurrentAdmin() admin: AdminPrincipal, @Body() body: PolicyDataDto): Promise<StoredPolicyInfo> {
    return this.distribution.activateData(admin, body.data);
  }
}
