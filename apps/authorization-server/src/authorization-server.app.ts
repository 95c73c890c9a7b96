import type { INestApplication } from '@nestjs/common';
import express from 'express';
import { ActivePolicy } from '@writ/policy';
import { createHttpApp, Runtime, strictJsonBody } from '@writ/platform';
import { AuthorizationServerModule } from './authorization-server.module';

/** Largest body the authorization server reads (token requests and task declarations). */
export const AUTH_BODY_LIMIT = 64 * 1024;

/** Builds the authorization server app (not yet listening). */
export function createAuthorizationServerApp(runtime: Runtime, policy: ActivePolicy): Promise<INestApplication> {
  return createHttpApp(AuthorizationServerModule.forRoot(runtime, policy), runtime, {
    name: 'authorization-server',
    configure: (app) => {
      // OAuth endpoints parse their own form bodies (to refuse repeated parameters).
      app.use('/oauth2', express.raw({ type: () => true, limit: AUTH_BODY_LIMIT }));
      app.use('/v1', strictJsonBody({ limit: AUTH_BODY_LIMIT }));
    },
  });
}
