import type { OrchestratorEntity, RowOf } from '@writ/database';
import { applyDecorators } from '@nestjs/common';
import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, ArrayUnique, IsArray, IsOptional, IsString, Matches } from 'class-validator';
import { CLIENT_ID_PATTERN, CLIENT_STATUSES } from '../../common/client-identity';
import { CreateClientDto, toClientDto, UpdateClientDto } from '../../common/client-identity.dto';
import { OptionalNotNull } from '../../common/optional';

/** An entry of `allowed_agents`: an agent id, or `*` for every agent. */
const ALLOWED_AGENT_PATTERN = new RegExp(`^(\\*|${CLIENT_ID_PATTERN.source.slice(1, -1)})$`);
const ALLOWED_AGENT_MESSAGE = 'each entry must be an agent id or "*"';
const MAX_ALLOWED_AGENTS = 1000;

/** Validation of `allowed_agents`: agent ids or `*`, unique, at most {@link MAX_ALLOWED_AGENTS}. */
function AllowedAgents(): PropertyDecorator {
  return applyDecorators(
    IsArray(),
    ArrayMaxSize(MAX_ALLOWED_AGENTS),
    ArrayUnique(),
    IsString({ each: true }),
    Matches(ALLOWED_AGENT_PATTERN, { each: true, message: ALLOWED_AGENT_MESSAGE }),
  );
}

/** `POST /v1/orchestrators`. */
export class CreateOrchestratorDto extends CreateClientDto {
  @ApiPropertyOptional({ type: [String], description: 'agents it may create tasks for; "*" for all. Default: none', example: ['invoice-agent'] })
  @IsOptional()
  @AllowedAgents()
  allowed_agents?: string[];
}

/** `PATCH /v1/orchestrators/{id}`: only the members given change; suspending revokes its Tasks API tokens. */
export class UpdateOrchestratorDto extends UpdateClientDto {
  @ApiPropertyOptional({ type: [String], description: 'replaces the whole list' })
  @OptionalNotNull()
  @AllowedAgents()
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

/** Maps an `orchestrators` row: a client's members plus `allowed_agents`. */
export function toOrchestratorDto(row: RowOf<OrchestratorEntity>): OrchestratorDto {
  return { ...toClientDto(row), allowed_agents: row.allowed_agents };
}
