import { Injectable } from '@nestjs/common';
import { InvalidAuthorizationDetailsError, InvalidRequestError, InvalidScopeError, InvalidTargetError } from '@writ/oauth';
import type { GrantContext, GrantHandler } from '../grant-handler';
import type { TokenResponseDto } from '../token-response.dto';
import { AccessTokenIssuer } from '../access-token-issuer.service';

/** Lifetime of an orchestrator's Tasks API token. */
export const TASKS_TOKEN_LIFETIME_SECONDS = 300;

/** `client_credentials` (RFC 6749 §4.4): an orchestrator gets a short-lived Tasks API token. */
@Injectable()
export class ClientCredentialsGrant implements GrantHandler {
  readonly grantType = 'client_credentials';
  readonly clientKinds = ['orchestrator'] as const;

  constructor(private readonly issuer: AccessTokenIssuer) {}

  /** Issues a `scope=tasks` access token. */
  async handle({ params, client, dpop }: GrantContext): Promise<TokenResponseDto> {
    if (dpop) throw new InvalidRequestError('DPoP binding is available for connector credentials (token exchange), not for the tasks token');
    const requested = (params.get('scope') ?? 'tasks').split(' ').filter(Boolean);
    if (requested.length !== 1 || requested[0] !== 'tasks') {
      throw new InvalidScopeError('the only scope available to orchestrators is "tasks"');
    }
    if (params.has('authorization_details')) {
      throw new InvalidAuthorizationDetailsError('client_credentials grants the tasks scope only: authorization_details are for token exchange');
    }
    // RFC 8707 / RFC 8693 targets: the token's audience is always the Tasks API, so a target
    // asked for is refused rather than ignored (the caller would believe it got that audience).
    if (params.has('resource') || params.has('audience')) {
      throw new InvalidTargetError('client_credentials issues the Tasks API token only: resource and audience are not supported');
    }
    const issued = await this.issuer.issue({
      kind: 'tasks',
      clientId: client.id,
      clientVersion: client.version,
      subject: client.id,
      audience: this.issuer.tasksAudience(),
      lifetimeSeconds: TASKS_TOKEN_LIFETIME_SECONDS,
      scope: 'tasks',
      auditActor: { type: 'orchestrator', id: client.id },
    });
    return { access_token: issued.token, token_type: 'Bearer', expires_in: issued.expiresIn, scope: 'tasks' };
  }
}
