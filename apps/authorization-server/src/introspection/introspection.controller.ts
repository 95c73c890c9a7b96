import { Controller, Headers, HttpCode, Post, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { sourceAddress } from '@writ/platform';
import { formParams } from '../http/form-request';
import { IntrospectionResponseDto, IntrospectionService } from './introspection.service';

/** `POST /oauth2/introspect` (RFC 7662). */
@Controller('oauth2')
export class IntrospectionController {
  constructor(private readonly introspection: IntrospectionService) {}

  /** Tells an entitled client whether a token is active, and its claims. */
  @Post('introspect')
  @HttpCode(200)
  introspect(
    @Req() request: Request,
    @Res({ passthrough: true }) response: Response,
    @Headers('authorization') authorization?: string,
  ): Promise<IntrospectionResponseDto> {
    response.setHeader('Cache-Control', 'no-store');
    response.setHeader('Pragma', 'no-cache');
    return this.introspection.introspect(formParams(request), authorization, sourceAddress(request));
  }
}
