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
  documentHostRefusal(document);
  // The page is served by mountDocs (strict CSP, no inline code); SwaggerModule serves the document.
  SwaggerModule.setup('docs', app, document, { jsonDocumentUrl: 'docs-json', ui: false });
  return app;
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
