import { Body, Controller, Get, HttpCode, Post, Query, Res } from '@nestjs/common';
import { ApiBadRequestResponse, ApiOkResponse, ApiProduces, ApiQuery } from '@nestjs/swagger';
import { ValidationFailedError } from '@writ/platform';
import { AdminPrincipal, CurrentAdmin } from '../auth/admin-principal';
import type { Response } from 'express';
import { auditRecordLine, type AuditRecord, type AuditVerification } from '@writ/audit';
import { AdminApi } from '../auth/admin-api.decorator';
import { RequireRole } from '../auth/require-role.decorator';
import type { Page } from '../common/cursor';
import { ValidationErrorDto } from '../common/error.dto';
import { AuditLogService } from './audit-log.service';
import { AuditPageDto } from './dto/audit-page.dto';
import { AuditFilterQueryDto, AuditHashDto, AuditHashRequestDto, AuditListQueryDto } from './dto/audit-query.dto';
import { AuditVerificationDto } from './dto/audit-record.dto';
import { AuditCheckpointPageDto } from './dto/audit-checkpoint.dto';
import { PageQueryDto } from '../common/page-query.dto';

/** `/v1/audit`: the hash-chained event log. */
@Controller('v1/audit')
@AdminApi('audit')
export class AuditController {
  constructor(private readonly log: AuditLogService) {}

  /** Events, newest first, filtered, in cursor pages. */
  @Get()
  @ApiOkResponse({ type: AuditPageDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  list(@Query() query: AuditListQueryDto): Promise<Page<AuditRecord>> {
    return this.log.list(query);
  }

  /**
   * Verifies the chain: gapless, linked, each hash recomputed, head matching, signed checkpoints
   * found. By default incrementally, from the last signed checkpoint this service verified;
   * `?full=true` walks from `seq` 1 (role `admin`, at most once a minute per instance).
   */
  @Get('verify')
  @ApiOkResponse({ type: AuditVerificationDto })
  @ApiQuery({ name: 'full', required: false, enum: ['true', 'false'], description: 'walk the whole chain (role admin, rate-limited)' })
  verify(@CurrentAdmin() admin: AdminPrincipal, @Query('full') full?: string): Promise<AuditVerification> {
    if (full !== undefined && full !== 'true' && full !== 'false')
      throw new ValidationFailedError([{ field: 'full', message: 'must be true or false' }], 'the query is invalid');
    return this.log.verify(admin, full === 'true');
  }

  /**
   * Signed checkpoints of the chain head, newest first, and the public key that verifies
   * them (also written beside the checkpoint file): what an auditor keeps outside Writ.
   */
  @Get('checkpoints')
  @ApiOkResponse({ type: AuditCheckpointPageDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  checkpoints(@Query() query: PageQueryDto): Promise<AuditCheckpointPageDto> {
    return this.log.checkpoints(query);
  }

  /** Every matching event, oldest first, one JSON record per line (`application/x-ndjson`), in ASCII (see `auditRecordLine`). */
  @Get('export')
  @ApiProduces('application/x-ndjson')
  @ApiOkResponse({ description: 'one audit record (as in GET /v1/audit) per line, oldest first' })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  async export(@Query() query: AuditFilterQueryDto, @Res() response: Response): Promise<void> {
    const records = this.log.export(query);
    // Read the first page before answering, so that a failure is still a clean error response.
    const first = await records.next();
    response.status(200);
    response.setHeader('Content-Type', 'application/x-ndjson; charset=utf-8');
    response.setHeader('Cache-Control', 'no-store');
    if (!first.done) {
      await write(response, auditRecordLine(first.value) + '\n');
      for await (const record of records) await write(response, auditRecordLine(record) + '\n');
    }
    response.end();
  }

  /** The keyed hash of a value, to find it in events that store it hashed (not audited, not stored). */
  @Post('hash')
  @HttpCode(200)
  @RequireRole('viewer')
  @ApiOkResponse({ type: AuditHashDto })
  @ApiBadRequestResponse({ type: ValidationErrorDto })
  hash(@Body() body: AuditHashRequestDto): AuditHashDto {
    return this.log.hash(body.value);
  }
}

/** Writes a chunk, waiting for the client to drain when the socket buffer is full. */
function write(response: Response, chunk: string): Promise<void> {
  if (response.write(chunk)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      response.off('drain', onDrain);
      response.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new Error('the client went away during the export'));
    };
    response.once('drain', onDrain);
    response.once('close', onClose);
  });
}
