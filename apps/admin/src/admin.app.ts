import type { INestApplication } from '@nestjs/common';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import express from 'express';
import { ActivePolicy } from '@writ/policy';
import { createHttpApp, Runtime, strictJsonBody } from '@writ/platform';
import { AdminModule } from './admin.module';
import { mountConsole } from './console/console-static';
import { MAX_POLICY_BUNDLE_BYTES } from './policies/policy-distribution.service';

/** Largest JSON body the admin API reads (a connector catalogue fits well within it). */
export const ADMIN_BODY_LIMIT = 1024 * 1024;

/** Builds the admin API app (not yet listening), with its OpenAPI document at `/docs` and `/docs-json`. */
export async function createAdminApp(runtime: Runtime, policy: ActivePolicy): Promise<INestApplication> {
  const app = await createHttpApp(AdminModule.forRoot(runtime, policy), runtime, {
    name: 'admin',
    configure: (instance) => {
      mountConsole(instance);
      // A compiled policy bundle is uploaded as it is (`curl --data-binary @bundle.tar.gz`).
      instance.use(
        '/v1/policies/active',
        express.raw({ type: ['application/gzip', 'application/x-gzip', 'application/octet-stream', 'application/wasm'], limit: MAX_POLICY_BUNDLE_BYTES }),
      );
      instance.use(strictJsonBody({ limit: ADMIN_BODY_LIMIT }));
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
  SwaggerModule.setup('docs', app, document, { jsonDocumentUrl: 'docs-json' });
  return app;
}
