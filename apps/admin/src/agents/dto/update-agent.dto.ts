import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsObject, IsOptional, IsString, Length, MaxLength } from 'class-validator';
import { OptionalNotNull } from '../../common/optional';
import { CLIENT_STATUSES, JWKS_EXAMPLE } from '../../common/client-identity';

/** `PATCH /v1/agents/{id}`: only the members given change. */
export class UpdateAgentDto {
  @ApiPropertyOptional({ maxLength: 200 })
  @OptionalNotNull()
  @IsString()
  @Length(1, 200)
  name?: string;

  @ApiPropertyOptional({ maxLength: 2000, nullable: true, description: 'null clears it' })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  description?: string | null;

  @ApiPropertyOptional({ enum: CLIENT_STATUSES, description: 'suspending revokes every live credential of the agent' })
  @OptionalNotNull()
  @IsIn(CLIENT_STATUSES)
  status?: (typeof CLIENT_STATUSES)[number];

  @ApiPropertyOptional({ description: 'replaces the whole key set', example: JWKS_EXAMPLE })
  @OptionalNotNull()
  @IsObject()
  jwks?: Record<string, unknown>;
}
