import type { Server } from 'node:http';
import type { NextFunction, Request, Response } from 'express';
import { requestPath } from './request-values';

/** Paths never shed nor refused while draining: probes and scrapes must see the truth. */
const ALWAYS_ADMITTED = /^\/(health\/|metrics$)/;

/** What the gate reports, e.g. to metrics. */
export interface InFlightGateEvents {
  /** A request was refused before any work: `overload` (the limit) or `draining` (shutdown). */
  onShed?: (reason: 'overload' | 'draining') => void;
}

/**
 * Bounds the requests one service works on at once, and drains them at shutdown.
 *
 * Past `limit` in-flight requests a new one is answered at once `503` with `Retry-After: 1`,
 * before any parsing, database or policy work: a caller at twice the capacity gets a fast
 * refusal instead of everyone getting a slow answer (or a reset connection). While draining,
 * every new request (on a connection kept alive) is refused the same way with
 * `Connection: close`, and {@link drain} resolves when the admitted ones have finished.
 */
export class InFlightGate {
  private active = 0;
  private draining = false;
  private idle: Array<() => void> = [];

  constructor(
    private readonly limit: number,
    private readonly events: InFlightGateEvents = {},
  ) {}

  /** Requests being worked on now. */
  get inFlight(): number {
    return this.active;
  }

  /** The Express middleware; install it first. */
  middleware(): (req: Request, res: Response, next: NextFunction) => void {
    return (req, res, next) => {
      const path = requestPath(req);
      if (this.draining && /^\/health\/ready\/?$/i.test(path)) {
        // Not ready while draining: a load balancer polling readiness stops sending requests here.
        res.setHeader('Retry-After', '1');
        res.setHeader('Cache-Control', 'no-store');
        res
          .status(503)
          .json({ status: 'unavailable', failing: ['draining'], checks: { draining: { status: 'down', reason: 'the service is shutting down' } } });
        return;
      }
      if (ALWAYS_ADMITTED.test(path)) return next();
      if (this.draining || this.active >= this.limit) {
        const reason = this.draining ? 'draining' : 'overload';
        this.events.onShed?.(reason);
        res.setHeader('Retry-After', '1');
        res.setHeader('Cache-Control', 'no-store');
        if (this.draining) res.setHeader('Connection', 'close');
        res.status(503).json({
          error: 'temporarily_unavailable',
          error_description: reason === 'draining' ? 'the service is shutting down; retry on another instance' : 'the service is overloaded; retry later',
        });
        return;
      }
      this.active += 1;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        this.active -= 1;
        if (this.active === 0 && this.idle.length > 0) for (const resolve of this.idle.splice(0)) resolve();
      };
      // `close` fires once the response is sent or the caller went away, whichever comes first.
      res.once('close', finish);
      if (this.draining) res.setHeader('Connection', 'close');
      next();
    };
  }

  /**
   * Stops admitting and waits up to `deadlineMs` for the admitted requests to finish; true when
   * all finished. The server still accepts meanwhile: a request that arrives (a load balancer
   * that has not yet seen the instance go) is answered `503` with `Retry-After` and
   * `Connection: close`, not refused at the TCP level or reset. {@link close} ends it.
   */
  async drain(server: Server | undefined, deadlineMs: number): Promise<boolean> {
    this.draining = true;
    // Kept-alive connections with no request in progress are closed now; the busy ones after
    // their response (which carries `Connection: close`) or at the deadline.
    server?.closeIdleConnections?.();
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      this.active === 0 ? Promise.resolve(true) : new Promise<boolean>((resolve) => this.idle.push(() => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), deadlineMs))),
    ]);
    clearTimeout(timer);
    return finished;
  }

  /** After {@link drain}: stops the server accepting connections and closes every one left. */
  close(server: Server | undefined): void {
    this.draining = true;
    server?.close();
    server?.closeAllConnections?.();
  }
}
