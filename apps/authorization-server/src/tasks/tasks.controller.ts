import { Body, Controller, Get, Headers, HttpCode, Param, Post, Query, Req, UseGuards, UseInterceptors } from '@nestjs/common';
import type { Request } from 'express';
import type { TaskDto } from '@writ/grants';
import { NoStore, UnreadQueryInterceptor, ValidationFailedError } from '@writ/platform';
import { CreateTaskDto } from './dto/create-task.dto';
import type { CreatedTaskDto } from './dto/created-task.dto';
import { ORCHESTRATOR, OrchestratorBearerGuard, OrchestratorPrincipal } from './orchestrator-bearer.guard';
import { TasksService } from './tasks.service';
import { TokenRefusalInterceptor } from './token-refusal.interceptor';

type AuthedRequest = Request & { [ORCHESTRATOR]: OrchestratorPrincipal };

/**
 * The `Idempotency-Key` header: 1 to 255 visible ASCII characters (a UUID, say), or absent. Anything
 * else, a repeated header included (Node joins repeats with a comma and a space), is a `400`
 * naming it, never ignored.
 */
function idempotencyKeyOf(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (/^[\x21-\x7e]{1,255}$/.test(header)) return header;
  throw new ValidationFailedError(
    [{ field: 'Idempotency-Key', message: 'must be 1 to 255 visible ASCII characters, sent once (e.g. a UUID)' }],
    'the request headers are invalid',
  );
}

/**
 * The Tasks API (orchestrators, Bearer token with scope `tasks`). A query member a route does not
 * read (`?grant_cursor=` for `grants_cursor`, `__proto__`, `toString`) is a `400` naming it, as in
 * the admin API: a mistyped cursor must not answer the first page as if none had been sent.
 */
@Controller('v1/tasks')
@UseGuards(OrchestratorBearerGuard)
@UseInterceptors(TokenRefusalInterceptor, UnreadQueryInterceptor)
export class TasksController {
  constructor(private readonly tasks: TasksService) {}

  /** Declares a task; the answer carries its task token (a credential): never cached. */
  @Post()
  @NoStore()
  create(@Req() request: AuthedRequest, @Body() body: CreateTaskDto, @Headers('idempotency-key') idempotencyKey?: string): Promise<CreatedTaskDto> {
    return this.tasks.create(request[ORCHESTRATOR], body, idempotencyKeyOf(idempotencyKey));
  }

  /** Reads a task, its status and a page of its grants (`grants_cursor`: the next page). */
  @Get(':id')
  get(@Req() request: AuthedRequest, @Param('id') id: string, @Query('grants_cursor') grantsCursor?: unknown): Promise<TaskDto> {
    return this.tasks.get(request[ORCHESTRATOR], id, grantsCursor);
  }

  /** Completes a task; its credentials are revoked before this returns. */
  @Post(':id/complete')
  @HttpCode(200)
  complete(@Req() request: AuthedRequest, @Param('id') id: string): Promise<TaskDto> {
    return this.tasks.end(request[ORCHESTRATOR], id, 'completed');
  }

  /** Fails a task; its credentials are revoked before this returns. */
  @Post(':id/fail')
  @HttpCode(200)
  fail(@Req() request: AuthedRequest, @Param('id') id: string): Promise<TaskDto> {
    return this.tasks.end(request[ORCHESTRATOR], id, 'failed');
  }
}
