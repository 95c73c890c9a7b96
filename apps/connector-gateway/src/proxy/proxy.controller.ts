import { All, Controller, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { ProxyService } from './proxy.service';

/**
 * `ANY /connectors/{id}/{upstream path}`: checked, then forwarded with the upstream credential.
 * The gateway app hands these calls to the proxy before Nest routes them (`createGatewayApp`).
 */
@Controller('connectors')
export class ProxyController {
  constructor(private readonly proxy: ProxyService) {}

  /** Streams the upstream response itself, hence `@Res()`. */
  @All(['*path'])
  forward(@Req() req: Request, @Res() res: Response): Promise<void> {
    return this.proxy.handle(req, res);
  }
}
