import { Controller, Get, Module, Post } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import express, { NextFunction, Request, Response } from 'express';
import type { AddressInfo } from 'node:net';
import { InvalidRequestError } from '@writ/oauth';
import { DirectRoute, inOrder, Middleware, serveDirect } from './direct-route';
import { WritExceptionFilter } from './http-exception.filter';
import { createLogger } from './logger';

@Controller('hot')
class HotController {
  @Get('nest')
  nest() {
    return { served: 'nest' };
  }

  @Post('nest-post')
  nestPost() {
    return { served: 'nest' };
  }
}

@Module({ controllers: [HotController] })
class HotModule {}

const logger = createLogger('silent');

/** A Nest app on Express with `common` in front of every route, `route` served ahead of the router. */
async function appWith(common: Middleware[], route: DirectRoute): Promise<{ app: NestExpressApplication; url: string }> {
  const app = await NestFactory.create<NestExpressApplication>(HotModule, { bodyParser: false, logger: false, abortOnError: false });
  const layer = inOrder(common);
  app.use(layer);
  serveDirect(app, layer, route, logger);
  app.useGlobalFilters(new WritExceptionFilter(logger));
  await app.listen(0, '127.0.0.1');
  return { app, url: `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}` };
}

const tagged: Middleware = (_req: Request, res: Response, next: NextFunction) => {
  res.setHeader('X-Common', 'yes');
  next();
};

const direct: DirectRoute = {
  matches: (req) => req.method === 'POST' && (req.url ?? '').startsWith('/direct'),
  parsers: [express.raw({ type: () => true, limit: 16 })],
  handle: async (req, res) => {
    if (req.headers['x-fail'] === 'oauth') throw new InvalidRequestError('the request names a failure');
    if (req.headers['x-fail'] === 'error') throw new Error('a bug');
    const body = req.body as Buffer | undefined;
    res.status(201).json({ served: 'direct', originalUrl: req.originalUrl, path: req.path, body: body?.toString('utf8') ?? null, app: req.app === res.app });
  },
};

describe('serveDirect', () => {
  let app: NestExpressApplication | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it('serves a matching request with what Express gives a route: common middlewares, parsers, req and res methods', async () => {
    const started = await appWith([tagged], direct);
    app = started.app;
    const response = await fetch(`${started.url}/direct/x?y=1`, { method: 'POST', body: 'hello' });
    expect(response.status).toBe(201);
    expect(response.headers.get('x-common')).toBe('yes');
    expect(await response.json()).toEqual({ served: 'direct', originalUrl: '/direct/x?y=1', path: '/direct/x', body: 'hello', app: true });
  });

  it("leaves every other request to Express and Nest's router, common middlewares included", async () => {
    const started = await appWith([tagged], direct);
    app = started.app;
    for (const [method, path] of [
      ['GET', '/hot/nest'],
      ['POST', '/hot/nest-post'],
    ]) {
      const response = await fetch(`${started.url}${path}`, { method });
      expect(response.headers.get('x-common')).toBe('yes');
      expect(await response.json()).toEqual({ served: 'nest' });
    }
    // GET /direct is not matched: Nest answers 404 with the filter's body.
    const missing = await fetch(`${started.url}/direct`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'not_found' });
  });

  it("answers the handler's errors with the exception filter, as for a Nest route", async () => {
    const started = await appWith([tagged], direct);
    app = started.app;
    const refused = await fetch(`${started.url}/direct`, { method: 'POST', headers: { 'x-fail': 'oauth' } });
    expect(refused.status).toBe(400);
    expect(refused.headers.get('cache-control')).toBe('no-store');
    expect(await refused.json()).toEqual({ error: 'invalid_request', error_description: 'the request names a failure' });
    const failed = await fetch(`${started.url}/direct`, { method: 'POST', headers: { 'x-fail': 'error' } });
    expect(failed.status).toBe(500);
    expect(await failed.json()).toEqual({ error: 'server_error', error_description: 'an internal error occurred' });
  });

  it("answers a parser's refusal (a body over its limit) and runs no handler", async () => {
    const handle = jest.fn(direct.handle);
    const started = await appWith([tagged], { ...direct, handle });
    app = started.app;
    const response = await fetch(`${started.url}/direct`, { method: 'POST', body: 'x'.repeat(17) });
    expect(response.status).toBe(413);
    expect(handle).not.toHaveBeenCalled();
  });

  it('answers a middleware that throws or passes an error, and the server stays up', async () => {
    const throwing: Middleware = (req, _res, next) => {
      if (req.headers['x-throw'] === 'sync') throw new InvalidRequestError('thrown by a middleware');
      if (req.headers['x-throw'] === 'next') return next(new InvalidRequestError('passed by a middleware'));
      next();
    };
    const started = await appWith([throwing, tagged], direct);
    app = started.app;
    const thrown = await fetch(`${started.url}/direct`, { method: 'POST', headers: { 'x-throw': 'sync' } });
    expect(thrown.status).toBe(400);
    expect(await thrown.json()).toMatchObject({ error_description: 'thrown by a middleware' });
    const passed = await fetch(`${started.url}/direct`, { method: 'POST', headers: { 'x-throw': 'next' } });
    expect(passed.status).toBe(400);
    expect(await passed.json()).toMatchObject({ error_description: 'passed by a middleware' });
    const served = await fetch(`${started.url}/direct`, { method: 'POST', body: 'ok' });
    expect(served.status).toBe(201);
  });

  it('refuses to start unless Express is the server’s one request listener', async () => {
    const created = await NestFactory.create<NestExpressApplication>(HotModule, { bodyParser: false, logger: false, abortOnError: false });
    app = created;
    created.getHttpServer().on('request', () => undefined);
    expect(() => serveDirect(created, inOrder([]), direct, logger)).toThrow('expected one request listener (Express), found 2');
  });
});
