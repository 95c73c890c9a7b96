import { CanActivate, ExecutionContext, Inject, Injectable } from '@nestjs/common';
import type { Request } from 'express';
import type { Pool } from 'pg';
import { PG_POOL } from '@writ/database';
import { RowIntegrity } from '@writ/grants';
import { SigningKeyStore } from '@writ/keys';
import { InsufficientScopeError, InvalidTokenError, ACCESS_TOKEN_TYP, TemporarilyUnavailableError, TooManyRequestsError } from '@writ/oauth';
import { FailureThrottle, sourceAddress } from '@writ/platform';
import { AccessTokenIssuer } from '../token/access-token-issuer.service';

/** The orchestrator a Tasks API request is made by. */
export interface OrchestratorPrincipal {
  id: string;
  allowedAgents: string[];
  jti: string;
}

/** Request property where the guard leaves the principal. */
export const ORCHESTRATOR = 'writOrchestrator';

/**
 * Bearer authentication of the Tasks API (RFC 6750): an RFC 9068 token of this issuer for
 * the Tasks API audience with scope `tasks`, not revoked, of an active orchestrator.
 */
@Injectable()
export class OrchestratorBearerGuard implements CanActivate {
  constructor(
    private readonly keys: SigningKeyStore,
    private readonly issuer: AccessTokenIssuer,
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly throttle: FailureThrottle,
    private readonly integrity: RowIntegrity,
  ) {}

  /**
   * Verifies the token and attaches the principal. A refused token counts as a failed
   * authentication of its source address (shared with the OAuth endpoints): `429` with
   * `Retry-After` past the limit.
   */
  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<Request & { [ORCHESTRATOR]?: OrchestratorPrincipal }>();
    const source = sourceAddress(request);
    const blocked = await this.throttle.refuseIfBlocked('oauth', source);
    if (blocked) throw new TooManyRequestsError(blocked.retryAfterSeconds, 'too many failed requests from this address', { reason: 'throttled' });
    try {
      return await this.authenticate(request);
    } catch (error) {
      await this.countRefusal(request, error);
      throw error;
    }
  }

  /**
   * Counts a refused bearer token (`invalid_token`) as a failed authentication of the request's
   * source address, and throws `429` with `Retry-After` past the limit; anything else is not
   * counted. The guard's own refusals, and those of a handler that checks the token again later
   * (task creation does at its commit), count alike.
   */
  async countRefusal(request: Request, error: unknown): Promise<void> {
    if (!(error instanceof InvalidTokenError)) return;
    const verdict = await this.throttle.failure('oauth', sourceAddress(request));
    if (verdict.limited) throw new TooManyRequestsError(verdict.retryAfterSeconds, 'too many failed requests from this address', { reason: 'throttled' });
  }

  private async authenticate(request: Request & { [ORCHESTRATOR]?: OrchestratorPrincipal }): Promise<boolean> {
    const header = request.headers.authorization ?? '';
    // RFC 7235 section 2.1: the scheme is case-insensitive (the gateway and admin API agree).
    const match = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i.exec(header);
    if (!match) throw new InvalidTokenError('a Bearer access token with scope "tasks" is required');
    let claims: Record<string, unknown>;
    try {
      claims = (await this.keys.verify(match[1], { typ: ACCESS_TOKEN_TYP, audience: this.issuer.tasksAudience() })).payload;
    } catch (error) {
      if (error instanceof TemporarilyUnavailableError) throw error;
      throw new InvalidTokenError('the access token is invalid or expired');
    }
    const scopes = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
    if (!scopes.includes('tasks')) {
      throw new InsufficientScopeError('the access token lacks the "tasks" scope', { rule: 'scope', scope: 'tasks' });
    }
    // The orchestrator is the one the token was signed for (its `client_id` claim): the
    // credential's row (not tagged) must name the same one, so that a row moved to another
    // orchestrator in SQL does not lend that orchestrator's standing to this token.
    if (typeof claims.jti !== 'string' || typeof claims.client_id !== 'string') throw new InvalidTokenError('the access token is invalid or expired');
    const { rows } = await this.pool.query<{ id: string; status: string; jwks: unknown; allowed_agents: string[]; integrity_tag: string | null }>(
      `SELECT o.id, o.status, o.jwks, o.allowed_agents, o.integrity_tag FROM access_tokens t JOIN orchestrators o ON o.id = t.client_id
        WHERE t.jti = $1 AND t.kind = 'tasks' AND t.client_id = $2 AND t.revoked_at IS NULL AND o.status = 'active'`,
      [claims.jti, claims.client_id],
    );
    // An orchestrator row changed outside Writ (its integrity tag does not verify) stands as if it were gone.
    if (
      !rows[0] ||
      !this.integrity.verifyClient(
        'orchestrators',
        { id: rows[0].id, status: rows[0].status, jwks: rows[0].jwks, allowedAgents: rows[0].allowed_agents },
        rows[0].integrity_tag,
      )
    ) {
      throw new InvalidTokenError('the access token has been revoked');
    }
    request[ORCHESTRATOR] = { id: rows[0].id, allowedAgents: rows[0].allowed_agents, jti: claims.jti };
    return true;
  }
}
