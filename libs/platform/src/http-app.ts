import { DynamicModule, INestApplication, Type } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ExpressAdapter, NestExpressApplication } from '@nestjs/platform-express';
import type { NextFunction, Request, Response } from 'express';
import { randomUUID } from 'node:crypto';
import { createServer, RequestListener, Server, ServerResponse } from 'node:http';
import type { HttpServerConfig } from '@writ/config';
import { refuseOtherHosts } from './allowed-hosts';
import { DirectRoute, inOrder, Middleware, serveDirect, UNROUTABLE_TARGETS } from './direct-route';
import { WritExceptionFilter } from './http-exception.filter';
import { InFlightGate } from './in-flight-gate';
import { refuseRepeatedHeaders } from './repeated-headers';
import { requestLog } from './request-log';
import { runWithRequestContext } from './request-context';
import { tracingEnabled, tracingMiddleware } from './tracing';
import type { Runtime } from './runtime';

/** The gate of each app, for {@link drainHttpApp}. */
const gates = new WeakMap<INestApplication, InFlightGate>();

/** An incoming `X-Request-Id` is kept when it is this (letters, digits, `._:-`, at most 128). */
const WELL_FORMED_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's `X-Request-Id` when well-formed. */
export function callerRequestIdOf(header: string | string[] | undefined): string | undefined {
  return typeof header === 'string' && WELL_FORMED_REQUEST_ID.test(header) ? header : undefined;
}

/** The request id: the caller's `X-Request-Id` when well-formed, else a new UUID. */
export function requestIdOf(header: string | string[] | undefined): string {
  return callerRequestIdOf(header) ?? randomUUID();
}

/**
 * What a connection's inactivity (nothing read or sent for `WRIT_HTTP_SEND_TIMEOUT_MS`) means
 * while `res` is its current answer: the service still working on it, nothing waiting to be
 * sent (a slow upstream, a long query, a body not yet received: other deadlines bound those),
 * keeps the connection; an answer ended or stuck in the server's buffers because the caller
 * does not read it closes the connection, and with it the answers pipelined behind it.
 */
function onInactive(res: ServerResponse, timeoutMs: number): void {
  const socket = res.socket;
  if (!socket) return;
  if (!res.writableEnded && socket.writableLength === 0) socket.setTimeout(timeoutMs);
  else socket.destroy();
}

/**
 * Express under Nest, on a Node server with Writ's deadlines: a caller that dribbles its
 * headers or body (slowloris) is answered `408` and cut once `WRIT_HTTP_HEADERS_TIMEOUT_MS` or
 * `WRIT_HTTP_REQUEST_TIMEOUT_MS` has passed, instead of holding a connection and an in-flight
 * slot for Node's defaults (60 s, 300 s, checked only every 30 s). The response may take longer;
 * but a connection whose answer has waited `WRIT_HTTP_SEND_TIMEOUT_MS` for the caller to read
 * any of it is closed (Node waits for ever: a caller that never reads kept its connection and
 * its pipelined answers in memory).
 */
class BoundedExpressAdapter extends ExpressAdapter {
  constructor(private readonly bounds: HttpServerConfig) {
    super();
  }

  override initHttpServer(): void {
    const { headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs, sendTimeoutMs } = this.bounds;
    const server = createServer(
      // Expired connections are looked for every second (Node's default: every 30 s), sooner when a deadline is shorter.
      { headersTimeout: headersTimeoutMs, requestTimeout: requestTimeoutMs, connectionsCheckingInterval: Math.min(1000, headersTimeoutMs) },
      this.getInstance<RequestListener>(),
    );
    server.keepAliveTimeout = keepAliveTimeoutMs;
    // Inactivity of a connection (Node re-arms it at each request; an idle kept-alive one has
    // the keep-alive timeout instead): with a listener on the answer (see `createHttpApp`),
    // Node leaves the decision to it (`onInactive`).
    server.timeout = sendTimeoutMs;
    this.httpServer = server;
  }
}

/** Options of {@link createHttpApp}. */
export interface HttpAppOptions {
  /** Name in log lines, e.g. `authorization-server`. */
  name: string;
  /** Installs this app's body parsers (each app parses what its endpoints accept, within limits). */
  configure?: (app: NestExpressApplication) => void;
  /** This app's hot endpoint, served ahead of Express's router ({@link serveDirect}). */
  direct?: (app: NestExpressApplication) => DirectRoute;
}

/**
 * Creates a Nest app on Express with Writ's common HTTP behaviour: request logs without
 * credentials, a request id, no `X-Powered-By`, `Cache-Control: no-store` unless an endpoint
 * sets its own, the one exception filter, and no body parsing unless the app asks for it.
 */
export async function createHttpApp(module: Type<unknown> | DynamicModule, runtime: Runtime, options: HttpAppOptions): Promise<INestApplication> {
  const logger = runtime.logger.child({ service: options.name });
  const app = await NestFactory.create<NestExpressApplication>(module, new BoundedExpressAdapter(runtime.config.http), {
    bodyParser: false,
    logger: false,
    abortOnError: false,
  });
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  // First: an overloaded or draining service refuses before any other work (logging included).
  let shedSince = 0;
  let shedCount = 0;
  const gate = new InFlightGate(runtime.config.operations.maxInFlight, {
    onShed: (reason) => {
      runtime.metrics?.shed(options.name, reason);
      // One line per ten seconds while shedding, not one per refused request.
      shedCount += 1;
      const now = Date.now();
      if (now - shedSince >= 10_000) {
        logger.warn({ reason, shed: shedCount, limit: runtime.config.operations.maxInFlight }, 'shedding requests (503, Retry-After)');
        shedSince = now;
        shedCount = 0;
      }
    },
  });
  gates.set(app, gate);
  const { sendTimeoutMs } = runtime.config.http;
  const common: Middleware[] = [
    (_req: Request, res: Response, next: NextFunction) => {
      res.on('timeout', () => onInactive(res, sendTimeoutMs));
      next();
    },
    gate.middleware(),
  ];
  if (tracingEnabled()) common.push(tracingMiddleware(options.name));
  // The caller's request id follows the request into its audit events.
  common.push((req: Request, _res: Response, next: NextFunction) => {
    const callerRequestId = callerRequestIdOf(req.headers['x-request-id']);
    if (callerRequestId) runWithRequestContext({ callerRequestId }, next);
    else next();
  });
  common.push((req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    res.once('finish', () => runtime.metrics?.httpAnswered(options.name, req.method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9));
    next();
  });
  common.push(requestLog(logger, requestIdOf));
  common.push((_req: Request, res: Response, next: NextFunction) => {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // Every answer is per caller and many carry credentials: nothing is cached unless an
    // endpoint says so (discovery and JWKS do; the gateway forwards the upstream's header).
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  // A repeated Authorization or Content-Type is read as its first copy by Node, maybe as its last elsewhere.
  common.push(refuseRepeatedHeaders);
  // Before any route, authentication or failure counting: a DNS-rebinding page's requests never count.
  const hostCheck = refuseOtherHosts(runtime.config.allowedHosts, (reason) => runtime.metrics?.hostRefused(options.name, reason));
  if (hostCheck) {
    runtime.metrics?.checksHosts(options.name);
    common.push(hostCheck);
  } else if (runtime.config.anyHostByDefault) {
    logger.warn(
      { host: runtime.config.host },
      'WRIT_ALLOWED_HOSTS is not set and WRIT_HOST is not loopback: any Host is answered (set it to this service names, or * to silence this)',
    );
  }
  const commonLayer = inOrder(common);
  app.use(commonLayer);
  options.configure?.(app);
  if (options.direct) serveDirect(app, commonLayer, options.direct(app), logger);
  serveDirect(app, commonLayer, UNROUTABLE_TARGETS, logger);
  app.useGlobalFilters(new WritExceptionFilter(logger));
  return app;
}

/**
 * Graceful stop of apps' HTTP side, together: each refuses every new request (`503`,
 * `Retry-After`, `Connection: close`) and waits up to `deadlineMs` for its admitted ones; once
 * all have (so that no app of the process refuses connections while another still drains), each
 * stops accepting and cuts what is left. True, per app, when every admitted request finished.
 */
export async function drainHttpApps(apps: INestApplication[], deadlineMs: number): Promise<boolean[]> {
  const servers = apps.map((app) => app.getHttpServer() as Server | undefined);
  const drained = await Promise.all(
    apps.map(
      (app, index) =>
        gates
          .get(app)
          ?.drain(servers[index], deadlineMs)
          .catch(() => false) ?? Promise.resolve(true),
    ),
  );
  apps.forEach((app, index) => {
    const gate = gates.get(app);
    if (gate) gate.close(servers[index]);
    else servers[index]?.close();
  });
  return drained;
}

/** {@link drainHttpApps} of one app. */
export async function drainHttpApp(app: INestApplication, deadlineMs: number): Promise<boolean> {
  return (await drainHttpApps([app], deadlineMs))[0];
}
