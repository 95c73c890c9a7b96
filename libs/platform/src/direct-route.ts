import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host';
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { Express, NextFunction, Request, Response } from 'express';
import type { IncomingMessage, RequestListener, Server } from 'node:http';
import type { Logger } from 'pino';
import { InvalidRequestError } from '@writ/oauth';
import { WritExceptionFilter } from './http-exception.filter';

/** An Express middleware. */
export type Middleware = (req: Request, res: Response, next: NextFunction) => void;

/**
 * Middlewares as one, run in order: the router's work per layer (matching, `next`) was paid
 * once per middleware and request.
 */
export function inOrder(middlewares: readonly Middleware[]): Middleware {
  return (req, res, next) => {
    let index = 0;
    const step = (error?: unknown): void => {
      if (error !== undefined) return next(error);
      const middleware = middlewares[index++];
      if (middleware) middleware(req, res, step);
      else next();
    };
    step();
  };
}

/** A hot endpoint served ahead of Express's router: see {@link serveDirect}. */
export interface DirectRoute {
  /** The requests it serves, by method and raw URL; every other request goes on to Express. */
  matches: (req: IncomingMessage) => boolean;
  /** Run after the common middlewares, before `handle`: the endpoint's body parser, if any. */
  parsers?: readonly Middleware[];
  /** Answers the request; what it throws is answered by the exception filter. */
  handle: (req: Request, res: Response) => Promise<void>;
}

/**
 * Serves the requests `route` matches before Express sees them: for the hot endpoints only (the
 * gateway's calls, the token endpoint). Express's router, even with one layer in front of the
 * route, cost 4–6% of their main-thread time (matching each layer, a `next` closure and a final
 * handler per request) and a tenth of their allocations. These requests get what Express gives
 * them (its `req`/`res` methods and their `app`, `originalUrl`), then `common` (the gate, request id,
 * metrics, request log and headers, as every route), then `parsers`, then `handle`; their
 * errors go to the same exception filter as a Nest route's. Every other request is Express's,
 * as before.
 */
export function serveDirect(app: NestExpressApplication, common: Middleware, route: DirectRoute, logger: Logger): void {
  const server: Server = app.getHttpServer();
  const listeners = server.listeners('request') as RequestListener[];
  // Nest creates the server with Express as its one listener; anything else is not this setup.
  if (listeners.length !== 1) throw new Error(`expected one request listener (Express), found ${listeners.length}`);
  const express = listeners[0];
  const instance: Express = app.getHttpAdapter().getInstance();
  const filter = new WritExceptionFilter(logger);
  const steps = inOrder([common, ...(route.parsers ?? [])]);
  server.removeListener('request', express);
  server.on('request', (incoming: IncomingMessage, outgoing) => {
    if (!route.matches(incoming)) {
      express(incoming, outgoing);
      return;
    }
    const req = incoming as Request;
    const res = outgoing as Response;
    // What Express's `app.handle` and router set before the first middleware.
    req.res = res;
    res.req = req;
    Object.setPrototypeOf(req, instance.request);
    Object.setPrototypeOf(res, instance.response);
    res.locals ??= Object.create(null) as Record<string, unknown>;
    req.originalUrl = req.url;
    req.baseUrl = '';
    const fail: NextFunction = (error?: unknown) => filter.catch(error, new ExecutionContextHost([req, res, fail]));
    try {
      steps(req, res, (error?: unknown) => {
        if (error !== undefined) fail(error);
        else route.handle(req, res).catch(fail);
      });
    } catch (error) {
      // A middleware that throws (Express's router would catch it too); `handle` is async.
      fail(error);
    }
  });
}

/**
 * Request targets no route can see: neither a path (origin-form) nor `*` nor an absolute URL
 * that parses (`GET http://[x/connect/callback`). Express's router skips every layer for them
 * (its path is `undefined`), Nest's JSON 404 included, and Express answered its own HTML 404
 * page. Served ahead of Express ({@link serveDirect}), they are a JSON `400 invalid_request`.
 * An absolute URL that parses is left to the routes (the gateway refuses it, audited; the
 * connect callback too).
 */
export const UNROUTABLE_TARGETS: DirectRoute = {
  matches: (req) => {
    const target = req.url ?? '';
    return !target.startsWith('/') && target !== '*' && !URL.canParse(target);
  },
  handle: () => Promise.reject(new InvalidRequestError('the request target is neither a path nor a valid absolute URL')),
};
