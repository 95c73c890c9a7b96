import { Controller, Get, Inject, Res } from '@nestjs/common';
import type { Response } from 'express';
import { RUNTIME } from './runtime.module';
import type { Runtime } from './runtime';

/** One readiness check's result. */
interface CheckResult {
  status: 'up' | 'down';
  reason?: string;
}

async function within<T>(ms: number, what: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([what, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `GET /health/live` (the process answers, and the embedded PostgreSQL it supervises has not
 * been given up on) and `GET /health/ready` (PostgreSQL answers within a second). A service
 * that cannot write its audit events is not ready; a failing readiness names its check.
 */
@Controller('health')
export class HealthController {
  constructor(@Inject(RUNTIME) private readonly runtime: Runtime) {}

  /** Liveness: 503 only when the process cannot recover by itself (restart it). */
  @Get('live')
  live(@Res() res: Response): void {
    const fatal = this.runtime.fatal?.();
    if (fatal) {
      res.status(503).json({ status: 'down', reason: fatal });
      return;
    }
    res.status(200).json({ status: 'ok' });
  }

  /** Readiness: `503` with `Retry-After` and the failing check named, when the database does not answer. */
  @Get('ready')
  async ready(@Res() res: Response): Promise<void> {
    const checks: Record<string, CheckResult> = {};
    try {
      await within(1000, this.runtime.pool.query('SELECT 1'));
      checks.database = { status: 'up' };
    } catch (error) {
      checks.database = { status: 'down', reason: error instanceof Error ? error.message.split('\n')[0] : String(error) };
    }
    const failing = Object.entries(checks)
      .filter(([, check]) => check.status === 'down')
      .map(([name]) => name);
    if (failing.length > 0) {
      res.setHeader('Retry-After', '5');
      res.status(503).json({ status: 'unavailable', failing, checks });
      return;
    }
    res.status(200).json({ status: 'ok', checks });
  }
}
