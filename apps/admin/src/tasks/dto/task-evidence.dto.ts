import { ApiProperty } from '@nestjs/swagger';
import { AuditRecordDto } from '../../audit/dto/audit-record.dto';
import { AdminTaskDto } from './task.dtos';

/** Where a task's events sit in the chain, and whether they check out. */
export class EvidenceChainDto {
  @ApiProperty({ nullable: true, type: Number }) first_seq!: number | null;
  @ApiProperty({ nullable: true, type: Number }) last_seq!: number | null;
  @ApiProperty({ description: "every event's hash recomputes from its content and prev_hash, and the whole chain verifies" })
  verified!: boolean;
  @ApiProperty({ required: false, description: 'why not, when verified is false' }) reason?: string;
}

/** `GET /v1/tasks/{id}/evidence`: the task and every event about it, in chain order. */
export class TaskEvidenceDto {
  @ApiProperty({ type: AdminTaskDto }) task!: AdminTaskDto;
  @ApiProperty({ type: [AuditRecordDto] }) events!: AuditRecordDto[];
  @ApiProperty({ type: EvidenceChainDto }) chain!: EvidenceChainDto;
}
