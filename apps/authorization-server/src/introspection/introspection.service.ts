import { Injectable } from '@nestjs/common';
import { FormParams, InvalidRequestError } from '@writ/oauth';
import { OAuthFailureGate } from '../client-auth/oauth-failure-gate.service';
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

  /** `{active:false}` for anything revoked, expired, spent, foreign or unknown. */
  async introspect(params: FormParams, authorization: string | undefined, source: string): Promise<IntrospectionResponseDto> {
    const client = await this.gate.authenticate('introspection', params, authorization, source);
    const token = params.get('token');
    if (!token) throw new InvalidRequestError('token is required');
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
}
