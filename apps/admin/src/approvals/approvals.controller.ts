import { Body, Controller, Get, HttpCode, Param, Post, Query } from '@nestjs/common';
import { ApiConflictResponse, ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import type { ApprovalDto } from '@writ/grants';
import { AdminApi } from '../auth/admin-api.decorator';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import { RequireRole } from '../auth/require-role.decorator';
import type { Page } from '../common/cursor';
import { AdminErrorDto } from '../common/error.dto';
import { ApprovalDtoDoc, ApprovalListDto, DecideApprovalDto, ListApprovalsQueryDto } from './dto/approval.dtos';
import { ApprovalsService } from './approvals.service';

/** `/v1/approvals`: grants the policy sent for human approval. */
@Controller('v1/approvals')
@AdminApi('approvals')
export class ApprovalsController {
  constructor(private readonly approvals: ApprovalsService) {}

  /** Lists approvals, newest first (`?status=pending` for the queue). */
  @Get()
  @ApiOkResponse({ type: ApprovalListDto })
  list(@Query() query: ListApprovalsQueryDto): Promise<Page<ApprovalDto>> {
    return this.approvals.list(query);
  }

  /** Reads one approval. */
  @Get(':id')
  @ApiOkResponse({ type: ApprovalDtoDoc })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  get(@Param('id') id: string): Promise<ApprovalDto> {
    return this.approvals.get(id);
  }

  /** Approves: the agent's next exchange with this `approval_id` gets exactly these details, once. */
  @Post(':id/approve')
  @HttpCode(200)
  @RequireRole('operator')
  @ApiOkResponse({ type: ApprovalDtoDoc })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  @ApiConflictResponse({ type: AdminErrorDto, description: 'the approval is not pending (decided, used or expired)' })
  approve(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @Body() body: DecideApprovalDto): Promise<ApprovalDto> {
    return this.approvals.decide(admin, id, 'approved', body?.note);
  }

  /** Denies: the agent's next exchange with this `approval_id` gets `access_denied`. */
  @Post(':id/deny')
  @HttpCode(200)
  @RequireRole('operator')
  @ApiOkResponse({ type: ApprovalDtoDoc })
  @ApiNotFoundResponse({ type: AdminErrorDto })
  @ApiConflictResponse({ type: AdminErrorDto, description: 'the approval is not pending (decided, used or expired)' })
  deny(@CurrentAdmin() admin: AdminPrincipal, @Param('id') id: string, @Body() body: DecideApprovalDto): Promise<ApprovalDto> {
    return this.approvals.decide(admin, id, 'denied', body?.note);
  }
}
