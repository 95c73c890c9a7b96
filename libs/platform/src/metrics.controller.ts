import { Controller, Get, Inject, Res } from '@nestjs/common';
import type { Response } from 'express';
import { RUNTIME } from './runtime.module';
import type { Runtime } from './runtime';

/** `GET /metrics`: the process's Prometheus metrics (text exposition), on every service. */
@Controller('metrics')
export class MetricsController {
  constructor(@Inject(RUNTIME) private readonly runtime: Runtime) {}

  /** The scrape. */
  @Get()
  async scrape(@Res() res: Response): Promise<void> {
    const { contentType, body } = await this.runtime.metrics.render();
    res.setHeader('Content-Type', contentType);
    res.status(200).send(body);
  }
}
