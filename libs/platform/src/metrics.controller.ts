import { Controller, Get, Inject, Req, Res } from '@nestjs/common';
import type { Request, Response } from 'express';
import { createHash, timingSafeEqual } from 'node:crypto';
import { RUNTIME } from './runtime.module';
import type { Runtime } from './runtime';

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

/** True when `header` is `Bearer <token>` (compared in constant time). */
export function bearerMatches(header: string | undefined, token: string): boolean {
  const match = /^Bearer +(\S+) *$/i.exec(header ?? '');
  return match !== null && timingSafeEqual(digest(match[1]), digest(token));
}

/**
 * `GET /metrics`: the process's Prometheus metrics (text exposition), on every service; only
 * for `Authorization: Bearer <WRIT_METRICS_TOKEN>` when that is set.
 */
@Controller('metrics')
export class MetricsController {
  constructor(@Inject(RUNTIME) private readonly runtime: Runtime) {}

  /** The scrape. */
  @Get()
  async scrape(@Req() req: Request, @Res() res: Response): Promise<void> {
    const token = this.runtime.config.http.metricsToken;
    if (token !== undefined && !bearerMatches(req.headers.authorization, token)) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="writ-metrics"');
      res.status(401).json({ error: 'invalid_token', error_description: 'the metrics need the bearer token of WRIT_METRICS_TOKEN' });
      return;
    }
    let rendered: { contentType: string; body: string };
    try {
      rendered = await this.runtime.metrics.render();
    } catch {
      // With WRIT_WORKERS, a worker that does not answer the aggregation in time (restarting,
      // blocked): the scrape is unavailable, not a server error.
      res.setHeader('Retry-After', '5');
      res.status(503).json({ error: 'temporarily_unavailable', error_description: 'the metrics could not be gathered; retry later' });
      return;
    }
    res.setHeader('Content-Type', rendered.contentType);
    res.status(200).send(rendered.body);
  }
}
