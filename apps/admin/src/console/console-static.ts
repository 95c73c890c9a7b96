import type { NestExpressApplication } from '@nestjs/platform-express';
import express, { NextFunction, Request, Response } from 'express';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Where the console is served. */
export const CONSOLE_PATH = '/console';

/**
 * The console's Content-Security-Policy: its own scripts and styles only (no inline code, no
 * `eval`), API calls to this origin only, never framed, no forms posted elsewhere.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Headers of every console response (the API's own `X-Content-Type-Options` is set by the platform). */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': CONSOLE_CSP,
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), payment=(), usb=()',
  'Cache-Control': 'no-cache',
};

/**
 * The built console (`dist/console`, written by `scripts/build.js`), found from the
 * repository root whether the admin app runs compiled from `dist/` or from its sources.
 */
export function consoleAssetsDir(from: string = __dirname): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'dist', 'console');
    if (existsSync(join(candidate, 'index.html'))) return candidate;
    if (existsSync(join(dir, 'package.json')) || dirname(dir) === dir) return undefined;
  }
}

/**
 * Serves the console's static files at {@link CONSOLE_PATH} with strict headers. The console
 * speaks only the public admin API, with the admin token held in the page's memory: no
 * cookie is set, so there is no ambient credential to forge requests with. Without a built
 * console the path answers `503` and says how to build it.
 */
export function mountConsole(app: NestExpressApplication, dir: string | undefined = consoleAssetsDir()): void {
  app.use(CONSOLE_PATH, (_req: Request, res: Response, next: NextFunction) => {
    for (const [name, value] of Object.entries(CONSOLE_HEADERS)) res.setHeader(name, value);
    next();
  });
  if (!dir) {
    app.use(CONSOLE_PATH, (_req: Request, res: Response) => {
      res.setHeader('Retry-After', '60');
      res.status(503).type('text/plain').send('the console is not built: run `npm run build`\n');
    });
    return;
  }
  app.use(CONSOLE_PATH, express.static(dir, { index: 'index.html', dotfiles: 'ignore', etag: false, redirect: true }));
  app.use(CONSOLE_PATH, (_req: Request, res: Response) => {
    res.status(404).type('text/plain').send('not found\n');
  });
}
