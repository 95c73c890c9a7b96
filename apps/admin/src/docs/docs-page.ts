import type { NestExpressApplication } from '@nestjs/platform-express';
import { Router, type Request, type Response } from 'express';
import { dirname, join } from 'node:path';
import { CONSOLE_CSP, CONSOLE_HEADERS } from '../console/console-static';

/** Where the OpenAPI page is served (its document is at `/docs-json` and `/docs-yaml`). */
export const DOCS_PATH = '/docs';

/**
 * The OpenAPI page's Content-Security-Policy and headers: the console's, word for word. The page
 * has no inline script or style (its initialiser and its CSS are files); Swagger UI's scripts and
 * styles come from this origin, the document is fetched from here (and "Try it out" calls are sent
 * only here), images from here or `data:` (its icons); never framed, no forms posted anywhere.
 */
export const DOCS_CSP = CONSOLE_CSP;

/** Headers of every response of the page and its files. */
export const DOCS_HEADERS = CONSOLE_HEADERS;

/** The files of Swagger UI's distribution the page loads (nothing else of it is served: no OAuth redirect page, no source maps). */
const SWAGGER_UI_FILES = ['swagger-ui-bundle.js', 'swagger-ui.css', 'favicon-32x32.png', 'favicon-16x16.png'];

/**
 * The page, with its files' URLs relative to it (`base` is `./docs/` for `/docs`, `./` for
 * `/docs/`), so that it also works behind a proxy that serves the admin API under a path.
 */
function docsHtml(base: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>Writ admin API</title>
  <link rel="stylesheet" type="text/css" href="${base}swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="${base}docs-page.css">
  <link rel="icon" type="image/png" href="${base}favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="${base}favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="${base}swagger-ui-bundle.js"></script>
  <script src="${base}swagger-ui-init.js"></script>
</body>
</html>
`;
}

/** What the inline `<style>` of Nest's Swagger page held, as a file. */
const DOCS_CSS = `html { box-sizing: border-box; overflow: -moz-scrollbars-vertical; overflow-y: scroll; }
*, *:before, *:after { box-sizing: inherit; }
body { margin: 0; background: #fafafa; }
`;

/**
 * Swagger UI's initialiser, as a file (no inline script): loads the document from `<page>-json`
 * beside the page. No validator badge (`validatorUrl: null`): it would send the document's
 * URL to a third party and load an image from there. The base layout, without the standalone
 * preset's top bar: that bar's logo is an SVG with an inline `<style>`, which the CSP refuses
 * (and the bar's only other content is a field to load another document, which Nest's page hid).
 */
const DOCS_INIT_JS = `window.addEventListener('load', function () {
  var page = window.location.pathname.replace(/\\/(index\\.html)?$/, '');
  window.ui = SwaggerUIBundle({
    url: page + '-json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: 'BaseLayout',
  });
});
`;

/** Swagger UI's distribution, resolved from `@nestjs/swagger` (whose dependency it is). */
export function swaggerUiDir(): string {
  return dirname(require.resolve('swagger-ui-dist/package.json', { paths: [dirname(require.resolve('@nestjs/swagger'))] }));
}

/**
 * Serves the OpenAPI page at {@link DOCS_PATH} with strict headers: the page, its initialiser
 * and CSS, and the few Swagger UI files it loads; anything else under the path is a `404`. The
 * document itself (`/docs-json`, `/docs-yaml`) is served by `SwaggerModule` with `ui: false`.
 */
export function mountDocs(app: NestExpressApplication, dir: string = swaggerUiDir()): void {
  const router = Router({ strict: true, caseSensitive: true });
  router.use((_req: Request, res: Response, next) => {
    for (const [name, value] of Object.entries(DOCS_HEADERS)) res.setHeader(name, value);
    next();
  });
  const page = (base: string) => (_req: Request, res: Response) => void res.type('html').send(docsHtml(base));
  router.get('/', (req: Request, res: Response) => page(req.originalUrl.split('?')[0].endsWith('/') ? './' : './docs/')(req, res));
  router.get('/index.html', page('./'));
  router.get('/swagger-ui-init.js', (_req: Request, res: Response) => void res.type('application/javascript').send(DOCS_INIT_JS));
  router.get('/docs-page.css', (_req: Request, res: Response) => void res.type('text/css').send(DOCS_CSS));
  for (const file of SWAGGER_UI_FILES)
    router.get(`/${file}`, (_req: Request, res: Response) => res.sendFile(join(dir, file), { dotfiles: 'deny', etag: false, lastModified: false }));
  router.use((_req: Request, res: Response) => void res.status(404).type('text/plain').send('not found\n'));
  app.use(DOCS_PATH, router);
}
