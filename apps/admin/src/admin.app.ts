import { type INestApplication, UnsupportedMediaTypeException } from '@nestjs/common';
import { DocumentBuilder, type OpenAPIObject, type ResponseObject, SwaggerModule } from '@nestjs/swagger';
import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import { ActivePolicy } from '@writ/policy';
import { ANY_HOST_PATHS, carriesBody, createHttpApp, Runtime, strictJsonBody } from '@writ/platform';
import { AdminModule } from './admin.module';
import { ADMIN_CHALLENGE, authenticateBeforeBody, requireRoleBeforeBody } from './auth/admin-auth.filter';
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
      const authenticator = instance.get(AdminAuthenticator);
      instance.use(authenticateBeforeBody(authenticator));
      mountConsole(instance);
      mountDocs(instance);
      // A compiled policy bundle is uploaded as it is (`curl --data-binary @bundle.tar.gz`).
      let uploads = 0;
      instance.use(
        '/v1/policies/active',
        // Only an admin may send a bundle: a lesser token never takes an upload slot.
        requireRoleBeforeBody(authenticator, 'admin'),
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
  documentHealth(document);
  documentHostRefusal(document);
  // The page is served by mountDocs (strict CSP, no inline code); SwaggerModule serves the document.
  SwaggerModule.setup('docs', app, document, { jsonDocumentUrl: 'docs-json', ui: false });
  return app;
}

/** A JSON answer in the shape of the named component schema. */
const json = (schema: string) => ({ 'application/json': { schema: { $ref: `#/components/schemas/${schema}` } } });

/** The challenge of the `401` to a request with a body on an open endpoint that comes without a known admin token. */
const ADMIN_CHALLENGE_HEADER = { 'WWW-Authenticate': { description: `\`${ADMIN_CHALLENGE}\` (an admin token)`, schema: { type: 'string' } } };

/**
 * What an open `GET` endpoint (a probe, the scrape: no admin token needed) answers besides its
 * own. A request that carries a body (a probe or a scrape sends none) is refused before the
 * handler as every admin request with a body is (`authenticateBeforeBody`, then the JSON body
 * parser): `401`/`429` without a known admin token, then `400`, `413` or `415` (an empty JSON
 * object or array is read and ignored). A single-valued header sent twice is a `400` on every
 * path; so is a missing or malformed `Host` wherever the `Host` check applies (`hostScope` says
 * where). `call` names the endpoint's own request in the descriptions.
 */
function openEndpointRefusals(call: string, hostScope: string): Record<'400' | '401' | '413' | '415' | '429', ResponseObject> {
  const withBody = `a request with a body (a ${call} sends none), refused before the handler as on every admin endpoint`;
  return {
    '400': {
      description:
        'a single-valued header sent twice (`Authorization`, `Content-Type`, `Content-Length`, `Host`...), or a missing or malformed `Host` ' +
        `${hostScope}: \`{"error":"invalid_request","error_description"}\`; or ${withBody}, with an admin token: \`fields\` names \`body\` ` +
        '(this endpoint takes no body, or it is not JSON)',
      content: {
        'application/json': { schema: { oneOf: [{ $ref: '#/components/schemas/ValidationErrorDto' }, { $ref: '#/components/schemas/ProtocolErrorDto' }] } },
      },
    },
    '401': {
      description: `${withBody}, without a valid admin token: \`{"error":"unauthorized","message"}\``,
      headers: ADMIN_CHALLENGE_HEADER,
      content: json('AdminErrorDto'),
    },
    '413': { description: `${withBody}: over 1 MiB`, content: json('ProtocolErrorDto') },
    '415': { description: `${withBody}: not \`application/json\` (or not UTF-8)`, content: json('ProtocolErrorDto') },
    '429': {
      description: `${withBody}, without a valid admin token, from an address with too many failed authentications; see \`Retry-After\``,
      headers: { 'Retry-After': { description: 'seconds to wait', schema: { type: 'integer' } } },
      content: json('AdminErrorDto'),
    },
  };
}

/**
 * Documents `GET /metrics` as it is answered: `MetricsController` (libs/platform, which declares
 * no OpenAPI) gives the Prometheus text; `401` with a `Bearer` challenge when
 * `WRIT_METRICS_TOKEN` is set and the request does not carry it (a missing and a wrong token
 * alike, never `403`); `503` with `Retry-After` when, with `WRIT_WORKERS`, a worker's series
 * could not be gathered; and the refusals of every open endpoint ({@link openEndpointRefusals}).
 * The in-flight gate never sheds it; the `421` is added with every other operation's.
 */
function documentMetrics(document: OpenAPIObject): void {
  const scrape = document.paths['/metrics']?.get;
  if (!scrape) throw new Error('the admin app serves no GET /metrics to document');
  const refusals = openEndpointRefusals('scrape', '(where the service checks it: `WRIT_ALLOWED_HOSTS`)');
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
    ...refusals,
    '401': {
      description:
        '`WRIT_METRICS_TOKEN` is set and the request does not carry it as `Authorization: Bearer` (missing, another scheme, a wrong token): ' +
        `\`{"error":"invalid_token","error_description"}\` with \`WWW-Authenticate: Bearer realm="writ-metrics"\`; or ${refusals['401'].description}`,
      headers: {
        'WWW-Authenticate': {
          description: `\`Bearer realm="writ-metrics"\` (the metrics token), or \`${ADMIN_CHALLENGE}\` (an admin token, for a request with a body)`,
          schema: { type: 'string' },
        },
      },
      content: {
        'application/json': { schema: { oneOf: [{ $ref: '#/components/schemas/ProtocolErrorDto' }, { $ref: '#/components/schemas/AdminErrorDto' }] } },
      },
    },
    '503': {
      description: 'with `WRIT_WORKERS`, a worker did not hand over its series in time (restarting, blocked); `error` is `temporarily_unavailable`',
      headers: { 'Retry-After': { description: 'seconds to wait (5)', schema: { type: 'integer' } } },
      content: json('ProtocolErrorDto'),
    },
  };
}

/** One readiness check, as `GET /health/ready` reports it. */
const CHECK_SCHEMA = {
  type: 'object',
  required: ['status'],
  properties: {
    status: { type: 'string', enum: ['up', 'down'] },
    reason: { type: 'string', description: 'when down: a fixed phrase (the details are logged, not shown)', example: 'unreachable' },
  },
};

/** The checks of `GET /health/ready`, by name. */
const CHECKS_SCHEMA = {
  type: 'object',
  description: '`database`, `signing_keys`, `policy` (where this service decides with policies); while draining only `draining`',
  additionalProperties: CHECK_SCHEMA,
};

/**
 * Documents `GET /health/live` and `GET /health/ready` as `HealthController` (libs/platform,
 * which declares no OpenAPI) and the in-flight gate answer them: liveness `200`, or `503`
 * (with `Retry-After: 30`: only a restart helps) when the process cannot recover by itself;
 * readiness `200` with its checks, or `503` with `Retry-After` naming the failing checks (`5`),
 * or `draining` (`1`) while the service shuts down. Neither is ever shed. Besides, the refusals of
 * every open endpoint ({@link openEndpointRefusals}); the `421` is added by
 * {@link documentHostRefusal}.
 */
function documentHealth(document: OpenAPIObject): void {
  const live = document.paths['/health/live']?.get;
  const ready = document.paths['/health/ready']?.get;
  if (!live || !ready) throw new Error('the admin app serves no GET /health/live or /health/ready to document');
  const otherSpelling = '(only on a spelling of the path other than the exact one, e.g. a trailing slash: see `421`)';
  live.summary = 'Liveness: the process answers (restart it on 503)';
  live.description =
    'Open, answered whatever `Host` says on its exact path, never shed. `503` only when the process cannot recover by itself ' +
    '(an embedded PostgreSQL it could not restart). See docs/operations.md.';
  live.responses = {
    '200': {
      description: 'the process is up: `{"status":"ok"}`',
      content: { 'application/json': { schema: { type: 'object', required: ['status'], properties: { status: { type: 'string', enum: ['ok'] } } } } },
    },
    ...openEndpointRefusals('probe', otherSpelling),
    '503': {
      description: 'the process cannot recover by itself (restart it): `{"status":"down","reason"}`, e.g. the embedded PostgreSQL could not be restarted',
      headers: { 'Retry-After': { description: 'seconds (30): about the time a restart takes; waiting alone does not help', schema: { type: 'integer' } } },
      content: {
        'application/json': {
          schema: {
            type: 'object',
            required: ['status', 'reason'],
            properties: { status: { type: 'string', enum: ['down'] }, reason: { type: 'string' } },
          },
        },
      },
    },
  };
  ready.summary = 'Readiness: PostgreSQL answers, a signing key is loaded, the policy in force is the active one';
  ready.description =
    'Open, answered whatever `Host` says on its exact path, never shed. One check runs at a time; its answer is reused for a second. ' +
    'See docs/operations.md.';
  ready.responses = {
    '200': {
      description: 'every check is up: `{"status":"ok","checks"}`',
      content: {
        'application/json': {
          schema: { type: 'object', required: ['status', 'checks'], properties: { status: { type: 'string', enum: ['ok'] }, checks: CHECKS_SCHEMA } },
        },
      },
    },
    ...openEndpointRefusals('probe', otherSpelling),
    '503': {
      description:
        'not ready: `{"status":"unavailable","failing","checks"}`, `failing` naming each check that is down (`database`, `signing_keys`, ' +
        '`policy`) with `Retry-After: 5`, or `["draining"]` with `Retry-After: 1` while the service shuts down',
      headers: { 'Retry-After': { description: 'seconds to wait (5; 1 while draining)', schema: { type: 'integer' } } },
      content: {
        'application/json': {
          schema: {
            type: 'object',
            required: ['status', 'failing', 'checks'],
            properties: {
              status: { type: 'string', enum: ['unavailable'] },
              failing: { type: 'array', items: { type: 'string' }, example: ['database'] },
              checks: CHECKS_SCHEMA,
            },
          },
        },
      },
    },
  };
}

/**
 * Documents the `421` that every operation may answer: the `Host` check (`WRIT_ALLOWED_HOSTS`,
 * libs/platform) runs before any route, so no controller declares it. The health checks
 * (`ANY_HOST_PATHS`) are let through on their exact path only: Express routes other spellings
 * (a trailing slash, another case) to them too, and those are checked.
 */
function documentHostRefusal(document: OpenAPIObject): void {
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const method of ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'] as const) {
      const operation = operations[method];
      if (!operation) continue;
      operation.responses['421'] = {
        description: ANY_HOST_PATHS.has(path)
          ? `the path is not spelled exactly \`${path}\` (a trailing slash, another case: answered here all the same) and the \`Host\` header ` +
            'names no host this service answers for (`WRIT_ALLOWED_HOSTS`); the exact path is answered whatever `Host` says'
          : 'the `Host` header names no host this service answers for (`WRIT_ALLOWED_HOSTS`); answered before authentication',
        content: { 'application/json': { schema: { $ref: '#/components/schemas/ProtocolErrorDto' } } },
      };
    }
  }
}
