import { Injectable } from '@nestjs/common';
import { FormParams, InvalidRequestError } from '@writ/oauth';
import { OAuthFailureGate } from '../client-auth/oauth-failure-gate.service';
import type { RegisteredClient } from '../client-auth/registered-client';
import { TokenLookup } from './token-lookup.service';

/** The RFC 7662 response. */
export type IntrospectionResponseDto = { active: false } | ({ active: true } & Record<string, unknown>);

/** Token introspection (RFC 7662) for agents (own tokens) and orchestrators (their tasks' tokens). */
@Injectable()
export class IntrospectionService {
  constructor(
    private readonly gate: OAuthFailureGate,
    private readonly lookup: TokenLookup,
  ) {}

  /** `{active:false}` for anything revoked, expired, spent, foreign or unknown; task tokens included. */
  async introspect(params: FormParams, authorization: string | undefined, source: string): Promise<IntrospectionResponseDto> {
    const client = await this.gate.authenticate('introspection', params, authorization, source);
    const token = params.get('token');
    if (!token) throw new InvalidRequestError('token is required');
    if (TokenLookup.looksLikeTaskToken(token)) return this.introspectTaskToken(token, client);
    const known = await this.lookup.find(token, client);
    if (!known || !TokenLookup.isActive(known)) return { active: false };
    const { claims } = known;
    return {
      active: true,
      iss: claims.iss,
      // A credential acting for a user: `sub` is the user, `act.sub` the agent (RFC 8693 section 4.1).
      sub: claims.act ? claims.sub : known.subject,
      ...(claims.act ? { act: claims.act } : {}),
      aud: claims.aud,
      client_id: known.clientId,
      token_type: claims.cnf ? 'DPoP' : 'Bearer',
      ...(claims.cnf ? { cnf: claims.cnf } : {}),
      iat: claims.iat,
      exp: claims.exp,
      jti: known.jti,
      ...(known.scope ? { scope: known.scope } : {}),
      ...(known.authorizationDetails ? { authorization_details: known.authorizationDetails } : {}),
      ...(known.taskId ? { task_id: known.taskId } : {}),
      ...(known.maxUses !== null ? { uses_remaining: Math.max(0, known.maxUses - known.uses) } : {}),
    };
  }

  /**
   * A task token (the root of its task's credentials, which revocation also takes): active while
   * its task is, for the task's agent and its orchestrator; `client_id` is the orchestrator that
   * declared the task (and so requested the token).
   */
  private async introspectTaskToken(token: string, client: RegisteredClient): Promise<IntrospectionResponseDto> {
    const known = await this.lookup.findTaskToken(token, client);
    const now = Date.now();
    if (!known || known.task.status !== 'active' || known.task.expiresAt.getTime() <= now || known.claims.exp * 1000 <= now) return { active: false };
    const { claims, task } = known;
    return {
      active: true,
      iss: claims.iss,
      sub: claims.sub,
      aud: claims.aud,
      client_id: task.orchestratorId,
      iat: claims.iat,
      exp: claims.exp,
      jti: claims.jti,
      task_id: task.id,
    };
  }
}
