import { Controller, Get, Inject, Res } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import type { Response } from 'express';
import { PolicySync, type StoredPolicyRefusal } from './policy-distribution';
import { RUNTIME } from './runtime.module';
import type { Runtime } from './runtime';

/** A failing liveness's `Retry-After` (seconds): waiting alone does not help, a restart does, and takes about this long. */
const LIVENESS_RETRY_AFTER_SECONDS = '30';

/** One readiness check's result. */
interface CheckResult {
  status: 'up' | 'down';
  reason?: string;
}

async function within<T>(ms: number, what: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([what, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new ReadinessTimeout(ms)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

class ReadinessTimeout extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

/** Network errors of a database that cannot be reached. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EAI_AGAIN']);

/**
 * What an unauthenticated prober learns of a database failure: a fixed phrase. The driver's
 * message (host, port, login, database name) goes to the log only.
 */
export function databaseFailureReason(error: unknown): string {
  if (error instanceof ReadinessTimeout) return error.message;
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' ? message : '';
  if (typeof code === 'string' && code.startsWith('28')) return 'the login was refused';
  if (typeof code === 'string' && UNREACHABLE.has(code)) return 'unreachable';
  if (/timeout exceeded when trying to connect/i.test(text)) return 'no connection available in time';
  if (/connection terminated|terminating connection|Connection ended/i.test(text)) return 'the connection was lost';
  if (code === '57P03') return 'starting up or shutting down';
  return 'error';
}

/** The readiness reason of each refusal of the active stored policy (fixed phrases: the log names the version). */
const POLICY_REFUSALS: Record<StoredPolicyRefusal, string> = {
  load: 'the active stored policy does not load here',
  integrity: 'the active stored policy was refused: its integrity tag does not verify (changed outside Writ?)',
};

/** How long one readiness answer is reused: probes (never shed) cost one query per period, whoever sends them. */
const READINESS_REUSE_MS = 1000;

interface Readiness {
  failing: string[];
  checks: Record<string, CheckResult>;
}

/**
 * `GET /health/live` (the process answers, and the embedded PostgreSQL it supervises has not
 * been given up on) and `GET /health/ready` (PostgreSQL answers within a second, a signing key
 * is loaded and, where policies decide, the cluster's active policy is the one in force). A
 * service that cannot write its audit events is not ready; a failing readiness names its check
 * with a fixed phrase (details are logged, not shown). While draining, the in-flight gate
 * answers readiness `503` (`draining`) itself.
 */
@Controller('health')
export class HealthController {
  private readiness: Promise<Readiness> | undefined;
  private readinessAt = 0;

  constructor(
    @Inject(RUNTIME) private readonly runtime: Runtime,
    private readonly modules: ModuleRef,
  ) {}

  /** The app's policy sync, where it decides with policies (not the gateway). */
  private policySync(): PolicySync | undefined {
    try {
      return this.modules.get(PolicySync, { strict: false });
    } catch {
      return undefined;
    }
  }

  /**
   * Liveness: 503 only when the process cannot recover by itself (restart it). With
   * `Retry-After` as every 503 of Writ: about the time a supervisor takes to restart a process.
   */
  @Get('live')
  live(@Res() res: Response): void {
    const fatal = this.runtime.fatal?.();
    if (fatal) {
      res.setHeader('Retry-After', LIVENESS_RETRY_AFTER_SECONDS);
      res.status(503).json({ status: 'down', reason: fatal });
      return;
    }
    res.status(200).json({ status: 'ok' });
  }

  /** Readiness: `503` with `Retry-After` and the failing checks named. */
  @Get('ready')
  async ready(@Res() res: Response): Promise<void> {
    // One check at a time, its answer shared for a second: a flood of probes (the endpoint is
    // unauthenticated and never shed) cannot take the pool's connections from requests.
    const now = Date.now();
    if (!this.readiness || now - this.readinessAt >= READINESS_REUSE_MS) {
      this.readinessAt = now;
      this.readiness = this.check();
    }
    const { failing, checks } = await this.readiness;
    if (failing.length > 0) {
      res.setHeader('Retry-After', '5');
      res.status(503).json({ status: 'unavailable', failing, checks });
      return;
    }
    res.status(200).json({ status: 'ok', checks });
  }

  private async check(): Promise<Readiness> {
    const checks: Record<string, CheckResult> = {};
    try {
      await within(1000, this.runtime.pool.query('SELECT 1'));
      checks.database = { status: 'up' };
    } catch (error) {
      checks.database = { status: 'down', reason: databaseFailureReason(error) };
      this.runtime.logger.warn({ err: error instanceof Error ? error.message.split('\n')[0] : String(error) }, 'not ready: the database does not answer');
    }
    try {
      this.runtime.signingKeys.activeKid();
      // Keys not read for too long are not signed with (a token request would be a 503).
      checks.signing_keys = this.runtime.signingKeys.stale()
        ? { status: 'down', reason: 'the signing keys could not be read for 2 minutes' }
        : { status: 'up' };
    } catch {
      checks.signing_keys = { status: 'down', reason: 'no active signing key is loaded' };
    }
    const sync = this.policySync();
    if (sync) {
      const refused = sync.failingBecause();
      checks.policy = refused === undefined ? { status: 'up' } : { status: 'down', reason: POLICY_REFUSALS[refused] };
    }
    const failing = Object.entries(checks)
      .filter(([, check]) => check.status === 'down')
      .map(([name]) => name);
    return { failing, checks };
  }
}
