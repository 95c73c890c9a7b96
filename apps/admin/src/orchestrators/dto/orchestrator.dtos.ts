import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import {
  ArrayMaxSize, ArrayUnique, IsArray, IsIn, IsObject, IsOptional, IsString, Length, Matches, MaxLength,
} from 'class-validator';
import { CLIENT_ID_MESSAGE, CLIENT_ID_PATTERN, CLIENT_STATUSES, JWKS_EXAMPLE } from '../../common/client-identity';
import { OptionalNotNull } from '../../common/optional';

/** An entry of `allowed_agents`: an agent id, or `*` for every agent. */
const ALLOWED_AGENT_PATTERN = new RegExp(`^(\\*|${CLIENT_ID_PATTERN.source.slice(1, -1)})$`);
const ALLOWED_AGENT_MESSAGE = 'each entry must be an agent id or "*"';
const MAX_ALLOWED_AGENTS = 1000;

/** `POST /v1/orchestrators`. */
export class CreateOrchestratorDto {
  @ApiPropertyOptional({ pattern: CLIENT_ID_PATTERN.source, description: 'generated when absent', example: 'billing-orchestrator' })
  @IsOptional()
  @IsString()
  @Matches(CLIENT_ID_PATTERN, { message: CLIENT_ID_MESSAGE })
  id?: string;

  @ApiProperty({ maxLength: 200 })
  @IsString()
  @Length(1, 200)
  name!: string;

  @ApiPropertyOptional({ maxLength: 2000, nullable: true })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  description?: string | null;

  @ApiProperty({ description: 'public keys only', example: JWKS_EXAMPLE })
  @IsObject()
  jwks!: Record<string, unknown>;

  @ApiPropertyOptional({ type: [String], description: 'agents it may create tasks for; "*" for all. Default: none', example: ['invoice-agent'] })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(MAX_ALLOWED_AGENTS)
  @ArrayUnique()
  @IsString({ each: true })
  @Matches(ALLOWED_AGENT_PATTERN, { each: true, message: ALLOWED_AGENT_MESSAGE })
  allowed_agents?: string[];
}

/** `PATCH /v1/orchestrators/{id}`: only the members given change. */
export class UpdateOrchestratorDto {
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

  @ApiPropertyOptional({ enum: CLIENT_STATUSES, description: 'suspending revokes its Tasks API tokens' })
  @OptionalNotNull()
  @IsIn(CLIENT_STATUSES)
  status?: (typeof CLIENT_STATUSES)[number];

  @ApiPropertyOptional({ description: 'replaces the whole key set', example: JWKS_EXAMPLE })
  @OptionalNotNull()
  @IsObject()
  jwks?: Record<string, unknown>;

  @ApiPropertyOptional({ type: [String], description: 'replaces the whole list' })
  @OptionalNotNull()
  @IsArray()
  @ArrayMaxSize(MAX_ALLOWED_AGENTS)
  @ArrayUnique()
  @IsString({ each: true })
  @Matches(ALLOWED_AGENT_PATTERN, { each: true, message: ALLOWED_AGENT_MESSAGE })
  allowed_agents?: string[];
}

/** An orchestrator as the admin API shows it. */
export class OrchestratorDto {
  @ApiProperty() id!: string;
  @ApiProperty() name!: string;
  @ApiProperty({ nullable: true, type: String }) description!: string | null;
  @ApiProperty({ enum: CLIENT_STATUSES }) status!: (typeof CLIENT_STATUSES)[number];
  @ApiProperty() jwks!: Record<string, unknown>;
  @ApiProperty({ type: [String] }) allowed_agents!: string[];
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time' }) updated_at!: string;
}

/** A page of orchestrators. */
export class OrchestratorListDto {
  @ApiProperty({ type: [OrchestratorDto] }) items!: OrchestratorDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}

/** Maps an `orchestrators` row. */
export function toOrchestratorDto(row: Record<string, any>): OrchestratorDto {
  return {
    id: row.id,
    name: row.name,
    description: row.description ?? null,
    status: row.status,
    jwks: row.jwks,
    allowed_agents: row.allowed_agents,
    created_at: (row.created_at as Date).toISOString(),
    updated_at: (row.updated_at as Date).toISOString(),
  };
}
