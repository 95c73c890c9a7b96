import { type INestApplication, UnsupportedMediaTypeException } from '@nestjs/common';
import { DocumentBuilder, type OpenAPIObject, SwaggerModule } from '@nestjs/swagger';
import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import { ActivePolicy } from '@writ/policy';
import { ANY_HOST_PATHS, carriesBody, createHttpApp, Runtime, strictJsonBody } from '@writ/platform';
import { AdminModule } from './admin.module';
import { authenticateBeforeBody } from './auth/admin-auth.filter';
import { AdminAuthenticator } from './auth/admin-authenticator';
import { refuseCrossSiteRequests } from './auth/cross-site.filter';
import { mountConsole } from './console/console-static';
import { mountDocs } from './docs/docs-page';
import { MAX_POLICY_BUNDLE_BYTES } from './policies/policy-distribution.service';

/** Largest JSON body the admin API reads (a connector catalogue fits well within it). */
export const ADMIN_BODY_LIMIT = 1024 * 1024;

/**
 * Body members whose values are secrets, or values kept only hashed: a connector's credential
 * (`credential.token`, `credential.client_secret`, …) and the value of `POST /v1/audit/hash`.
 * A refusal there never quotes the value.
 */
const ADMIN_SECRET_PATHS = /^(credential(\.|\[|$)|value$)/;

/**
 * Policy bundles read at once per process: each is buffered whole (up to
 * `MAX_POLICY_BUNDLE_BYTES`, 8 MB) before the handler runs (the admin token is checked before,
 * but a few admin uploads at once would still hold tens of MB). More wait: `503` with `Retry-After`.
 */
export const MAX_CONCURRENT_BUNDLE_UPLOADS = 2;

/** The types a compiled policy bundle is uploaded as (`PUT /v1/policies/active`). */
const BUNDLE_TYPES = ['application/gzip', 'application/x-gzip', 'application/octet-stream', 'application/wasm'];

/** Builds the admin API app (not yet listening), with its OpenAPI page at `/docs` and document at `/docs-json`. */
export async function createAdminApp(runtime: Runtime, policy: ActivePolicy): Promise<INestApplication> {
  const app = await createHttpApp(AdminModule.forRoot(runtime, policy), runtime, {
    name: 'admin',
    configure: (instance) => {
      // Another site's page in an admin's browser is refused before its requests count as failed
      // authentications of the admin's own address (and lock the admin out).
      instance.use('/v1', refuseCrossSiteRequests());
      // No body is read before its request's admin token is known (every admin endpoint needs one).
      instance.use(authenticateBeforeBody(instance.get(AdminAuthenticator)));
      mountConsole(instance);
      mountDocs(instance);
      // A compiled policy bundle is uploaded as it is (`curl --data-binary @bundle.tar.gz`).
      let uploads = 0;
      instance.use(
        '/v1/policies/active',
        (req: Request, res: Response, next: NextFunction) => {
          if (!carriesBody(req)) return next();
          if (uploads >= MAX_CONCURRENT_BUNDLE_UPLOADS) {
            res.setHeader('Retry-After', '5');
            res.setHeader('Cache-Control', 'no-store');
            res.status(503).json({ error: 'temporarily_unavailable', error_description: 'policy bundles are being uploaded already; retry later' });
            return;
          }
          uploads += 1;
          res.once('close', () => (uploads -= 1));
          next();
        },
        express.raw({ type: BUNDLE_TYPES, limit: MAX_POLICY_BUNDLE_BYTES }),
        (req: Request, _res: Response, next: NextFunction) => {
          // Any other type would be refused by the JSON parser as "not JSON": name the bundle types instead.
          if (!Buffer.isBuffer(req.body) && carriesBody(req))
            next(new UnsupportedMediaTypeException(`content-type: a policy bundle is sent as ${BUNDLE_TYPES.join(', ')}`));
          else next();
        },
      );
      instance.use(strictJsonBody({ limit: ADMIN_BODY_LIMIT, secretPaths: ADMIN_SECRET_PATHS }));
    },
  });
  const document = SwaggerModule.createDocument(
    app,
    new DocumentBuilder()
      .setTitle('Writ admin API')
      .setDescription('Agents, orchestrators, connectors, tasks, audit, policies, signing keys and admin tokens. See docs/admin-api.md.')
      .setVersion('1')
      .addBearerAuth({ type: 'http', scheme: 'bearer', description: 'an admin token (role viewer, operator or admin)' })
      .build(),
  );
  documentMetrics(document);
  documentHostRefusal(document);
  // The page is served by mountDocs (strict CSP, no inline code); SwaggerModule serves the document.
  SwaggerModule.setup('docs', app, document, { jsonDocumentUrl: 'docs-json', ui: false });
  return app;
}

/**
 * Documents `GET /metrics` as it is answered: `MetricsController` (libs/platform, which declares
 * no OpenAPI) gives the Prometheus text; `401` with a `Bearer` challenge when
 * `WRIT_METRICS_TOKEN` is set and the request does not carry it (a missing and a wrong token
 * alike, never `403`); `503` with `Retry-After` when, with `WRIT_WORKERS`, a worker's series
 * could not be gathered. A request with a body (a scrape has none) is refused before it, as
 * every admin request with a body is (`authenticateBeforeBody`, then the JSON body parser):
 * `401`/`429` without a valid admin token, then `400`, `413` or `415`. The in-flight gate
 * never sheds it; the `421` is added with every other operation's.
 */
function documentMetrics(document: OpenAPIObject): void {
  const scrape = document.paths['/metrics']?.get;
  if (!scrape) throw new Error('the admin app serves no GET /metrics to document');
  const json = (schema: string) => ({ 'application/json': { schema: { $ref: `#/components/schemas/${schema}` } } });
  const withBody = 'a request with a body (a scrape sends none), refused before the scrape as on every admin endpoint';
  scrape.summary = 'Prometheus metrics of this process (of every worker, with WRIT_WORKERS)';
  scrape.description =
    'Open to anyone who reaches the port unless `WRIT_METRICS_TOKEN` is set; then only with `Authorization: Bearer <WRIT_METRICS_TOKEN>` ' +
    '(an admin token is not one). A request that carries a body is refused before the scrape, as the admin API refuses one: ' +
    'an admin token first, then the body. See docs/operations.md, Metrics.';
  scrape.responses = {
    '200': {
      description: 'the metrics, in the Prometheus text exposition format',
      content: { 'text/plain': { schema: { type: 'string', example: 'writ_http_requests_total{service="admin",method="GET",status="200"} 3' } } },
    },
    '400': { description: `${withBody}: \`fields\` names \`body\` (this endpoint takes no body, or it is not JSON)`, content: json('ValidationErrorDto') },
    '401': {
      description:
        '`WRIT_METRICS_TOKEN` is set and the request does not carry it as `Authorization: Bearer` (missing, another scheme, a wrong token): ' +
        '`{"error":"invalid_token","error_description"}` with `WWW-Authenticate`; or ' +
        `${withBody}, without a valid admin token: \`{"error":"unauthorized","message"}\``,
      headers: { 'WWW-Authenticate': { description: '`Bearer realm="writ-metrics"` (the metrics token)', schema: { type: 'string' } } },
      content: {
        'application/json': { schema: { oneOf: [{ $ref: '#/components/schemas/ProtocolErrorDto' }, { $ref: '#/components/schemas/AdminErrorDto' }] } },
      },
    },
    '413': { description: `${withBody}: over 1 MiB`, content: json('ProtocolErrorDto') },
    '415': { description: `${withBody}: not \`application/json\``, content: json('ProtocolErrorDto') },
    '429': {
      description: `${withBody}, without a valid admin token, from an address with too many failed authentications; see \`Retry-After\``,
      headers: { 'Retry-After': { description: 'seconds to wait', schema: { type: 'integer' } } },
      content: json('AdminErrorDto'),
    },
    '503': {
      description: 'with `WRIT_WORKERS`, a worker did not hand over its series in time (restarting, blocked); `error` is `temporarily_unavailable`',
      headers: { 'Retry-After': { description: 'seconds to wait (5)', schema: { type: 'integer' } } },
      content: json('ProtocolErrorDto'),
    },
  };
}

/**
 * Documents the `421` that every other operation may answer: the `Host` check
 * (`WRIT_ALLOWED_HOSTS`, libs/platform) runs before any route, so no controller declares it;
 * the health checks it lets through (`ANY_HOST_PATHS`) never answer it.
 */
function documentHostRefusal(document: OpenAPIObject): void {
  for (const [path, operations] of Object.entries(document.paths)) {
    if (ANY_HOST_PATHS.has(path)) continue;
    for (const method of ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'] as const) {
      const operation = operations[method];
      if (!operation) continue;
      operation.responses['421'] = {
        description: 'the `Host` header names no host this service answers for (`WRIT_ALLOWED_HOSTS`); answered before authentication',
        content: { 'application/json': { schema: { $ref: '#/components/schemas/ProtocolErrorDto' } } },
      };
    }
  }
}
