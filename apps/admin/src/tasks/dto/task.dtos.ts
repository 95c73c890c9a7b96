import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsOptional, IsString, Length, MaxLength } from 'class-validator';
import { PageQueryDto } from '../../common/page-query.dto';

/** The statuses of a task. */
export const TASK_STATUSES = ['active', 'completed', 'failed', 'expired', 'revoked'] as const;

/** `GET /v1/tasks`: filters and page. */
export class ListTasksQueryDto extends PageQueryDto {
  @ApiPropertyOptional() @IsOptional() @IsString() @Length(1, 128) agent_id?: string;
  @ApiPropertyOptional() @IsOptional() @IsString() @Length(1, 128) orchestrator_id?: string;
  @ApiPropertyOptional({ enum: TASK_STATUSES, description: 'the stored status (an active task past its deadline is swept to expired within seconds)' })
  @IsOptional()
  @IsIn(TASK_STATUSES)
  status?: (typeof TASK_STATUSES)[number];
}

/** `GET /v1/tasks/{id}`: which page of the task's grants. */
export class TaskReadQueryDto {
  @ApiPropertyOptional({ description: 'the grants_next_cursor of the previous read: the task with the next page of its grants' })
  @IsOptional()
  @IsString()
  @MaxLength(512)
  grants_cursor?: string;
}

/** `POST /v1/tasks/{id}/revoke`. */
export class RevokeTaskDto {
  @ApiPropertyOptional({ maxLength: 500, example: 'agent behaving out of purpose' })
  @IsOptional()
  @IsString()
  @MaxLength(500)
  reason?: string;
}

/** One credential of a task (never the token). */
export class TaskGrantDtoDoc {
  @ApiProperty() jti!: string;
  @ApiProperty() connector!: string;
  @ApiProperty() action!: string;
  @ApiProperty({ type: 'array', items: { type: 'object' } }) authorization_details!: unknown[];
  @ApiProperty({ format: 'date-time' }) issued_at!: string;
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
  @ApiProperty({ nullable: true, type: Number }) max_uses!: number | null;
  @ApiProperty() uses!: number;
  @ApiProperty({ enum: ['active', 'expired', 'revoked', 'spent'] }) state!: string;
  @ApiProperty({ nullable: true, type: String }) revoked_reason!: string | null;
}

/** A task's counters. */
export class TaskHistoryDoc {
  @ApiProperty() grants_issued!: number;
  @ApiProperty() refusals!: number;
  @ApiProperty() out_of_purpose_requests!: number;
}

/** A task as the admin API shows it (the same view as the Tasks API's). */
export class AdminTaskDto {
  @ApiProperty({ format: 'uuid' }) task_id!: string;
  @ApiProperty() agent_id!: string;
  @ApiProperty() orchestrator_id!: string;
  @ApiProperty() purpose!: string;
  @ApiProperty({ type: 'array', items: { type: 'object' }, description: 'the declared purpose (authorization_details entries)' }) allowed!: unknown[];
  @ApiProperty({ nullable: true, type: String }) on_behalf_of!: string | null;
  @ApiProperty({ nullable: true, type: Object, description: 'the verified user the task acts for: {iss, sub}' }) user!: { iss: string; sub: string } | null;
  @ApiProperty({ type: 'object', additionalProperties: true }) metadata!: Record<string, unknown>;
  @ApiProperty({ enum: TASK_STATUSES }) status!: string;
  @ApiProperty({ nullable: true, type: String }) status_reason!: string | null;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time' }) expires_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) ended_at!: string | null;
  @ApiProperty({ type: TaskHistoryDoc }) history!: TaskHistoryDoc;
  @ApiProperty({ description: 'calls the gateway forwarded with the credentials of this task (its gateway.call events with outcome success)' }) calls!: number;
  @ApiProperty({ type: [TaskGrantDtoDoc], description: 'empty in lists; GET /v1/tasks/{id}: at most 100, oldest first' }) grants!: TaskGrantDtoDoc[];
  @ApiPropertyOptional({ nullable: true, type: String, description: 'GET /v1/tasks/{id}: the grants_cursor of the next page of grants, null after the last' })
  grants_next_cursor?: string | null;
}

/** A page of tasks, newest first. */
export class TaskListDto {
  @ApiProperty({ type: [AdminTaskDto] }) items!: AdminTaskDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}
