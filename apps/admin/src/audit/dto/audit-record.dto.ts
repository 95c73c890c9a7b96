import { ApiProperty } from '@nestjs/swagger';

/** One event of the audit chain, as stored. */
export class AuditRecordDto {
  @ApiProperty({ description: 'position in the chain, from 1, gapless' }) seq!: number;
  @ApiProperty({ format: 'uuid' }) id!: string;
  @ApiProperty({ format: 'date-time' }) occurred_at!: string;
  @ApiProperty({ example: 'token.issued' }) type!: string;
  @ApiProperty({ enum: ['success', 'denied', 'failure', 'error', 'info'] }) outcome!: string;
  @ApiProperty({ enum: ['agent', 'orchestrator', 'admin', 'system', 'anonymous'] }) actor_type!: string;
  @ApiProperty({ nullable: true, type: String }) actor_id!: string | null;
  @ApiProperty({ nullable: true, type: String }) agent_id!: string | null;
  @ApiProperty({ nullable: true, type: String }) task_id!: string | null;
  @ApiProperty({ nullable: true, type: String }) connector_id!: string | null;
  @ApiProperty({ type: 'object', additionalProperties: true }) data!: Record<string, unknown>;
  @ApiProperty({ description: 'hash of the previous event (64 zeros for the first)' }) prev_hash!: string;
  @ApiProperty({ description: 'SHA-256(prev_hash || JCS(event)), hex' }) hash!: string;
}

/** The answer of `GET /v1/audit/verify`. */
export class AuditVerificationDto {
  @ApiProperty() valid!: boolean;
  @ApiProperty({ description: 'events checked' }) events!: number;
  @ApiProperty({ required: false }) first_invalid_seq?: number;
  @ApiProperty({ required: false }) reason?: string;
  @ApiProperty({ description: 'signed checkpoints whose hash was found in the chain' }) checkpoints_verified!: number;
  @ApiProperty({ nullable: true, type: Number, description: 'last checkpoint in the database; later events are not yet signed' })
  last_checkpoint_seq!: number | null;
  @ApiProperty({ required: false, description: 'checkpoints read from the external checkpoint file, when it exists' })
  external_checkpoints?: number;
  @ApiProperty({ required: false, description: 'the checkpoint that failed, when a checkpoint is the problem' })
  invalid_checkpoint_seq?: number;
  @ApiProperty({ required: false, description: 'incremental walk: the signed checkpoint it resumed from (events up to it were verified by an earlier walk)' })
  resumed_from_seq?: number;
}
