import type { AgentEntity, RowOf } from '@writ/database';
import { ApiProperty } from '@nestjs/swagger';
import { CLIENT_STATUSES } from '../../common/client-identity';
import { toClientDto } from '../../common/client-identity.dto';

/** An agent as the admin API shows it. */
export class AgentDto {
  @ApiProperty({ example: 'invoice-agent' }) id!: string;
  @ApiProperty() name!: string;
  @ApiProperty({ nullable: true, type: String }) description!: string | null;
  @ApiProperty({ enum: CLIENT_STATUSES }) status!: (typeof CLIENT_STATUSES)[number];
  @ApiProperty({ description: 'the registered public keys' }) jwks!: Record<string, unknown>;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time' }) updated_at!: string;
}

/** A page of agents. */
export class AgentListDto {
  @ApiProperty({ type: [AgentDto] }) items!: AgentDto[];
  @ApiProperty({ nullable: true, type: String, description: 'pass as ?cursor= for the next page; null on the last' }) next_cursor!: string | null;
}

/** Maps an `agents` row. */
export function toAgentDto(row: RowOf<AgentEntity>): AgentDto {
  return toClientDto(row);
}
