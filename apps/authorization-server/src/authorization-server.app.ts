import type { INestApplication } from '@nestjs/common';
import express from 'express';
import { ActivePolicy } from '@writ/policy';
import { createHttpApp, Runtime, strictJsonBody } from '@writ/platform';
import { AuthorizationServerModule } from './authorization-server.module';
import { TokenController } from './token/token.controller';

const NAME = 'authorization-server';

/** `POST /oauth2/token` as Express's router matches it: without case, one trailing slash allowed. */
const TOKEN_ENDPOINT = /^\/oauth2\/token\/?(?:\?|$)/i;

/** Largest body the authorization server reads (token requests and task declarations). */
export const AUTH_BODY_LIMIT = 64 * 1024;

/** Builds the authorization server app (not yet listening). */
export function createAuthorizationServerApp(runtime: Runtime, policy: ActivePolicy): Promise<INestApplication> {
  const oauthBody = express.raw({ type: () => true, limit: AUTH_BODY_LIMIT });
  return createHttpApp(AuthorizationServerModule.forRoot(runtime, policy), runtime, {
    name: NAME,
    configure: (app) => {
      // OAuth endpoints parse their own form bodies (to refuse repeated parameters).
      app.use('/oauth2', oauthBody);
      app.use('/v1', strictJsonBody({ limit: AUTH_BODY_LIMIT }));
    },
    // The token endpoint's POSTs are served ahead of Express's router (`serveDirect`); its
    // other methods stay Nest's.
    direct: (app) => {
      const tokens = app.get(TokenController);
      return {
        matches: (req) => req.method === 'POST' && TOKEN_ENDPOINT.test(req.url ?? ''),
        parsers: [oauthBody],
        handle: async (req, res) => {
          const body = await tokens.token(req, res, req.headers.authorization);
          res.status(200).json(body);
        },
      };
    },
  });
}
