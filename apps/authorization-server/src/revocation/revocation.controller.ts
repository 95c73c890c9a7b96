import { Controller, Headers, HttpCode, Post, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { sourceAddress } from '@writ/platform';
import { formParams } from '../http/form-request';
import { RevocationService } from './revocation.service';

/** `POST /oauth2/revoke` (RFC 7009). */
@Controller('oauth2')
export class RevocationController {
  constructor(private readonly revocation: RevocationService) {}

  /** Revokes a token; answers 200 with an empty body. */
  @Post('revoke')
  @HttpCode(200)
  async revoke(@Req() request: Request, @Res({ passthrough: true }) response: Response, @Headers('authorization') authorization?: string): Promise<void> {
    response.setHeader('Cache-Control', 'no-store');
    response.setHeader('Pragma', 'no-cache');
    await this.revocation.revoke(formParams(request), authorization, sourceAddress(request));
  }
}
