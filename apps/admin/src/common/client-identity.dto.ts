import type { AgentEntity, RowOf } from '@writ/database';
import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsObject, IsOptional, IsString, Length, Matches, MaxLength } from 'class-validator';
import { IsDisplayName } from '@writ/platform';
import { CLIENT_ID_MESSAGE, CLIENT_ID_PATTERN, CLIENT_STATUSES, JWKS_EXAMPLE } from './client-identity';
import { OptionalNotNull } from './optional';

/** The members every registered client (agent or orchestrator) is created with. */
export class CreateClientDto {
  @ApiPropertyOptional({ pattern: CLIENT_ID_PATTERN.source, description: 'generated when absent', example: 'invoice-agent' })
  @IsOptional()
  @IsString()
  @Matches(CLIENT_ID_PATTERN, { message: CLIENT_ID_MESSAGE })
  id?: string;

  @ApiProperty({ example: 'Invoice agent', maxLength: 200 })
  @IsString()
  @Length(1, 200)
  @IsDisplayName()
  name!: string;

  @ApiPropertyOptional({ maxLength: 2000, nullable: true })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  description?: string | null;

  @ApiProperty({ description: 'public keys only (EC, RSA >= 2048, Ed25519); private members are refused', example: JWKS_EXAMPLE })
  @IsObject()
  jwks!: Record<string, unknown>;
}

/** The members of a registered client a `PATCH` may change; only those given change. */
export class UpdateClientDto {
  @ApiPropertyOptional({ maxLength: 200 })
  @OptionalNotNull()
  @IsString()
  @Length(1, 200)
  @IsDisplayName()
  name?: string;

  @ApiPropertyOptional({ maxLength: 2000, nullable: true, description: 'null clears it' })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  description?: string | null;

  @ApiPropertyOptional({ enum: CLIENT_STATUSES, description: 'suspending revokes every live credential of the client' })
  @OptionalNotNull()
  @IsIn(CLIENT_STATUSES)
  status?: (typeof CLIENT_STATUSES)[number];

  @ApiPropertyOptional({ description: 'replaces the whole key set', example: JWKS_EXAMPLE })
  @OptionalNotNull()
  @IsObject()
  jwks?: Record<string, unknown>;
}

/** The columns agents and orchestrators share. */
export type ClientRow = RowOf<AgentEntity>;

/** The members every registered client shows, mapped from its row (never its private data: it has none). */
export function toClientDto(row: ClientRow) {
  return {
    id: row.id,
    name: row.name,
    description: row.description ?? null,
    status: row.status,
    jwks: row.jwks as unknown as Record<string, unknown>,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}
