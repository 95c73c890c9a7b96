import { ApiProperty } from '@nestjs/swagger';
import { AuditRecordDto } from './audit-record.dto';

/** A page of audit events, newest first. */
export class AuditPageDto {
  @ApiProperty({ type: [AuditRecordDto] }) items!: AuditRecordDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}
