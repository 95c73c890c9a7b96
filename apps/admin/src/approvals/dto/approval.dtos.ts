import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional, IsString, IsUUID, MaxLength } from 'class-validator';
import { PageQueryDto } from '../../common/page-query.dto';

/** The statuses of an approval (`expired`: pending or approved past its deadline). */
export const APPROVAL_STATUSES = ['pending', 'approved', 'denied', 'used', 'expired'] as const;

/** `GET /v1/approvals`: filters and page. */
export class ListApprovalsQueryDto extends PageQueryDto {
  @ApiPropertyOptional({ enum: APPROVAL_STATUSES }) @IsOptional() @IsIn(APPROVAL_STATUSES) status?: (typeof APPROVAL_STATUSES)[number];
  @ApiPropertyOptional({ format: 'uuid' }) @IsOptional() @IsUUID() task_id?: string;
}

/** `POST /v1/approvals/{id}/approve` and `/deny`. */
export class DecideApprovalDto {
  @ApiPropertyOptional({ maxLength: 500, example: 'checked with finance: invoice INV-42 is genuine' })
  @IsOptional()
  @IsString()
  @MaxLength(500)
  note?: string;
}

/** A pending or decided approval of a risky grant. */
export class ApprovalDtoDoc {
  @ApiProperty({ format: 'uuid' }) id!: string;
  @ApiProperty({ format: 'uuid' }) task_id!: string;
  @ApiProperty() agent_id!: string;
  @ApiProperty() connector_id!: string;
  @ApiProperty({ type: 'array', items: { type: 'object' }, description: 'exactly what the approved credential will grant' }) authorization_details!: unknown[];
  @ApiProperty({ type: [String], description: 'why the policy asked for approval' }) reasons!: string[];
  @ApiProperty() policy_version!: string;
  @ApiProperty({ enum: APPROVAL_STATUSES }) status!: string;
  @ApiProperty({ format: 'date-time' }) requested_at!: string;
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
  @ApiProperty({ nullable: true, type: String }) decided_at!: string | null;
  @ApiProperty({ nullable: true, type: String }) decided_by!: string | null;
  @ApiProperty({ nullable: true, type: String }) note!: string | null;
  @ApiProperty({ nullable: true, type: String }) used_at!: string | null;
  @ApiProperty({
    nullable: true,
    type: String,
    description: 'thumbprint of the DPoP key the agent asked with: the approved credential is bound to it (null: asked without a key, a bearer credential)',
  })
  dpop_jkt!: string | null;
}

/** A page of approvals. */
export class ApprovalListDto {
  @ApiProperty({ type: [ApprovalDtoDoc] }) items!: ApprovalDtoDoc[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}
