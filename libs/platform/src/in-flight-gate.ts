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
 * refusal instead of everyone getting a slow answer (or a reset connection). A request is in
 * flight until its answer is ended (`res.end`), not until the caller has read it: an answer
 * waiting in the server for a caller that does not read (its receive window closed, or
 * answers to requests it pipelined queued behind it) is no work, and must not hold a slot,
 * or one connection pipelining requests it never reads would shed everyone else for as long
 * as it stays open (such connections are cut by `WRIT_HTTP_SEND_TIMEOUT_MS`). While draining,
 * every new request (on a connection kept alive) is refused the same way with
 * `Connection: close`, and {@link drain} resolves when the admitted ones have finished and
 * their answers have been sent (or their connections closed).
 */
export class InFlightGate {
  /** Admitted requests whose answer is not ended yet: what the limit counts. */
  private active = 0;
  /** Admitted requests whose response has not closed yet (sent, or its connection gone): what a drain waits for. */
  private open = 0;
  private draining = false;
  private idle: Array<() => void> = [];

  constructor(
    private readonly limit: number,
    private readonly events: InFlightGateEvents = {},
  ) {}

  /** Requests being worked on now (admitted, their answer not yet ended). */
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
      this.open += 1;
      let working = true;
      let done = false;
      const release = () => {
        if (!working) return;
        working = false;
        this.active -= 1;
      };
      const finish = () => {
        release();
        if (done) return;
        done = true;
        this.open -= 1;
        if (this.open === 0 && this.idle.length > 0) for (const resolve of this.idle.splice(0)) resolve();
      };
      // The work is over once the answer is ended: what is left is the caller's to read.
      const end = res.end.bind(res) as (...params: unknown[]) => Response;
      res.end = function (...args: unknown[]) {
        const result = end(...args);
        release();
        return result;
      } as Response['end'];
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
      this.open === 0 ? Promise.resolve(true) : new Promise<boolean>((resolve) => this.idle.push(() => resolve(true))),
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
