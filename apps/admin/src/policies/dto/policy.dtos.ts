import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsArray, IsBase64, IsObject, IsOptional, IsString, IsUUID, MaxLength } from 'class-validator';

/** The policy in force. */
export class ActivePolicyDto {
  @ApiProperty({ description: 'SHA-256 of the module (and its data)' }) version!: string;
  @ApiProperty({ description: 'the policy file' }) source!: string;
  @ApiProperty({ format: 'date-time' }) loaded_at!: string;
  @ApiProperty({ example: 'startup', description: 'startup or file change' }) loaded_by!: string;
  @ApiProperty({ example: 'writ/grant/decision' }) entrypoint!: string;
  @ApiProperty({ enum: ['wasm', 'bundle'] }) format!: string;
}

/**
 * `POST /v1/policies/evaluate`: either a raw `input` document, or a stored task and the
 * `authorization_details` an agent would ask for (the input is then built as token exchange
 * builds it).
 */
export class EvaluatePolicyDto {
  @ApiPropertyOptional({ type: 'object', additionalProperties: true, description: 'a whole policy input (docs/policies.md); excludes task_id' })
  @IsOptional()
  @IsObject()
  input?: Record<string, unknown>;

  @ApiPropertyOptional({ format: 'uuid', description: 'a stored task' })
  @IsOptional()
  @IsUUID()
  task_id?: string;

  @ApiPropertyOptional({
    type: 'array',
    items: { type: 'object' },
    example: [
      { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 42000, currency: 'usd' } },
    ],
  })
  @IsOptional()
  @IsArray()
  authorization_details?: unknown[];

  @ApiPropertyOptional({ description: 'the RFC 8707 resource the request would carry' })
  @IsOptional()
  @IsString()
  @MaxLength(2048)
  resource?: string;

  @ApiPropertyOptional({ format: 'byte', description: 'a candidate policy to try instead of the active one: base64 of an opa build bundle or a .wasm module' })
  @IsOptional()
  @IsBase64()
  @MaxLength(1_000_000)
  candidate_bundle?: string;

  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: true,
    description: 'candidate policy data (replaced whole) for the active policy or the candidate bundle',
  })
  @IsOptional()
  @IsObject()
  candidate_data?: Record<string, unknown>;
}

/** A policy decision. */
export class DecisionDto {
  @ApiProperty() allow!: boolean;
  @ApiProperty({ type: [String] }) reasons!: string[];
  @ApiProperty() max_ttl_seconds!: number;
  @ApiProperty({ nullable: true, type: Number }) max_uses!: number | null;
  @ApiProperty() requires_approval!: boolean;
  @ApiProperty() quarantine!: boolean;
  @ApiProperty() out_of_purpose!: boolean;
}

/** The answer of a dry run: nothing is issued, counted or recorded. */
export class PolicyEvaluationDto {
  @ApiProperty() policy_version!: string;
  @ApiProperty({ type: DecisionDto }) decision!: DecisionDto;
  @ApiPropertyOptional({ type: 'object', additionalProperties: true, description: 'the input built from the task (task mode only)' })
  input?: Record<string, unknown>;
  @ApiPropertyOptional({
    type: [String],
    description:
      "task mode: what the exchange refuses whatever the policy says: its target (one connector, locations and resource naming the connector) and the server's own floor (one action, a catalogue operation, inside the task's allowed)",
  })
  violations?: string[];
}
