import { Controller, Headers, HttpCode, Post, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { sourceAddress } from '@writ/platform';
import { formParams } from '../http/form-request';
import { TokenService } from './token.service';
import type { TokenResponseDto } from './token-response.dto';

/**
 * `POST /oauth2/token` (RFC 6749 §3.2). Its POSTs are served ahead of Express's router by
 * `createAuthorizationServerApp` (`serveDirect`), which calls {@link TokenController.token};
 * the route stays Nest's for every other method.
 */
@Controller('oauth2')
export class TokenController {
  constructor(private readonly tokens: TokenService) {}

  /** Issues a token for any registered grant type. */
  @Post('token')
  @HttpCode(200)
  async token(
    @Req() request: Request,
    @Res({ passthrough: true }) response: Response,
    @Headers('authorization') authorization?: string,
  ): Promise<TokenResponseDto> {
    response.setHeader('Cache-Control', 'no-store');
    response.setHeader('Pragma', 'no-cache');
    return this.tokens.exchange(formParams(request), authorization, request.headers.dpop, sourceAddress(request));
  }
}
