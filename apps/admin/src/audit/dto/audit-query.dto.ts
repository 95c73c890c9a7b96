import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { QueryInteger } from '../../common/page-query.dto';
import { IsIn, IsInt, IsISO8601, IsOptional, IsString, Length, Max, MaxLength, Min } from 'class-validator';

/** Outcomes an event may have. */
export const AUDIT_OUTCOMES = ['success', 'denied', 'failure', 'error', 'info'] as const;
/** Default page of `GET /v1/audit`. */
export const DEFAULT_AUDIT_PAGE = 100;
/** Largest page of `GET /v1/audit`. */
export const MAX_AUDIT_PAGE = 1000;

const ISO = { strict: true, strictSeparator: true } as const;
const ISO_MESSAGE = 'must be an ISO 8601 timestamp, e.g. 2025-01-31T12:00:00Z';

/** The filters of the audit list and export. */
export class AuditFilterQueryDto {
  @ApiPropertyOptional() @IsOptional() @IsString() @Length(1, 128) agent_id?: string;
  @ApiPropertyOptional() @IsOptional() @IsString() @Length(1, 128) task_id?: string;
  @ApiPropertyOptional({ description: 'connector id' }) @IsOptional() @IsString() @Length(1, 128) connector?: string;
  @ApiPropertyOptional({ example: 'grant.decision' }) @IsOptional() @IsString() @Length(1, 128) type?: string;
  @ApiPropertyOptional({ enum: AUDIT_OUTCOMES }) @IsOptional() @IsIn(AUDIT_OUTCOMES) outcome?: (typeof AUDIT_OUTCOMES)[number];
  @ApiPropertyOptional({ format: 'date-time', description: 'events at or after' })
  @IsOptional()
  @IsISO8601(ISO, { message: ISO_MESSAGE })
  since?: string;
  @ApiPropertyOptional({ format: 'date-time', description: 'events before' })
  @IsOptional()
  @IsISO8601(ISO, { message: ISO_MESSAGE })
  until?: string;
}

/** `GET /v1/audit`: filters and a page, newest first. */
export class AuditListQueryDto extends AuditFilterQueryDto {
  @ApiPropertyOptional({ minimum: 1, maximum: MAX_AUDIT_PAGE, default: DEFAULT_AUDIT_PAGE })
  @IsOptional()
  @QueryInteger()
  @IsInt()
  @Min(1)
  @Max(MAX_AUDIT_PAGE)
  limit?: number;

  @ApiPropertyOptional({ description: 'the `next_cursor` of the previous page' })
  @IsOptional()
  @IsString()
  @MaxLength(1024)
  cursor?: string;
}

/** `POST /v1/audit/hash`: a value to look up in the audit log without storing it. */
export class AuditHashRequestDto {
  @ApiProperty({ maxLength: 4096, example: 'user-7' })
  @IsString()
  @Length(1, 4096)
  value!: string;
}

/** The keyed hash of a value, as events store it. */
export class AuditHashDto {
  @ApiProperty({ example: '3f1c…', description: 'hex' }) hash!: string;
  @ApiProperty({ example: 'hmac-sha256' }) algorithm!: string;
  @ApiProperty({
    type: [String],
    description: 'the same value hashed under each key of WRIT_MASTER_KEY_PREVIOUS: events recorded before a master key rotation hold one of these',
  })
  previous_hashes!: string[];
}
