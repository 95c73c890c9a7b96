import { Body, Controller, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import { AdminErrorDto } from '../common/error.dto';
import { TaskEvidenceDto } from './dto/task-evidence.dto';
import { AdminTaskDto, ListTasksQueryDto, RevokeTaskDto, TaskListDto, TaskReadQueryDto } from './dto/task.dtos';
import { AdminTasksService, AdminTaskView } from './tasks.service';

/** `/v1/tasks` (admin view): every task, revocation, evidence. */
@Controller('v1/tasks')
@AdminApi('tasks')
export class AdminTasksController {
  constructor(private readonly tasks: AdminTasksService) {}

  /** Lists tasks, newest first. */
  @Get()
  @ApiOkResponse({ type: TaskListDto })
  list(@Query() query: ListTasksQueryDto): Promise<{ items: AdminTaskView[]; next_cursor: string | null }> {
    return this.tasks.list(query);
  }

  /** Reads a task with a page of its grants. */
  @Get(':id')
  @ApiOkResponse({ type: AdminTaskDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  get(@Param('id') id: string, @Query() query: TaskReadQueryDto): Promise<AdminTaskView> {
    return this.tasks.get(id, query.grants_cursor);
  }

  /** The task's audit events in chain order, with their hashes. */
  @Get(':id/evidence')
  @ApiOkResponse({ type: TaskEvidenceDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  evidence(@Param('id') id: string): Promise<TaskEvidenceDto> {
    return this.tasks.evidence(id);
  }

  /** Revokes the task and all its credentials before answering. */
  @Post(':id/revoke')
  @HttpCode(200)
  @RequireRole('operator')
  @ApiOkResponse({ type: AdminTaskDto })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  revoke(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @Body() body: RevokeTaskDto): Promise<AdminTaskView> {
    return this.tasks.revoke(admin, id, body?.reason);
  }
}
