import { Injectable } from '@nestjs/common';
import { AuditService } from '@writ/audit';
import { FormParams, OAuthError, InvalidRequestError, UnauthorizedClientError } from '@writ/oauth';
import { ClientAuthenticator } from '../client-auth/client-authenticator.service';
import { DpopProofs } from '../dpop/dpop-proofs.service';
import { OAuthFailureGate } from '../client-auth/oauth-failure-gate.service';
import type { RegisteredClient } from '../client-auth/registered-client';
import { GrantRegistry } from './grant-registry';
import { POLICY_DENIED } from '@writ/grants';
import type { TokenResponseDto } from './token-response.dto';

/**
 * The token endpoint as a chain of small steps: grant type → client authentication →
 * client kind allowed → grant handler. Every refusal is audited before it is answered.
 */
@Injectable()
export class TokenService {
  constructor(
    private readonly grants: GrantRegistry,
    private readonly clients: ClientAuthenticator,
    private readonly audit: AuditService,
    private readonly dpopProofs: DpopProofs,
    private readonly gate: OAuthFailureGate,
  ) {}

  /**
   * Answers one token request, or throws the OAuth error to send. A refusal without an
   * authenticated client is throttled per `source` address and claimed client id, and audited
   * one event each only up to a cap per window (then summarised); an authenticated client's
   * refusals are each one event.
   */
  async exchange(params: FormParams, authorization: string | undefined, dpopHeader: string | string[] | undefined, source: string): Promise<TokenResponseDto> {
    let client: RegisteredClient | undefined;
    const grantType = params.get('grant_type');
    await this.gate.before(source);
    try {
      if (!grantType) throw new InvalidRequestError('grant_type is required');
      const handler = this.grants.get(grantType);
      client = await this.clients.authenticate(params, authorization);
      if (!handler.clientKinds.includes(client.kind)) {
        throw new UnauthorizedClientError(`this grant_type is not available to ${client.kind}s`);
      }
      const dpop = dpopHeader === undefined ? undefined : await this.dpopProofs.check(dpopHeader);
      return await handler.handle({ params, client, dpop });
    } catch (error) {
      if (error instanceof OAuthError) {
        if (client) await this.recordRefusal(error, grantType, client);
        else await this.gate.failed(source, params, () => this.recordRefusal(error, grantType, undefined));
      }
      throw error;
    }
  }

  private async recordRefusal(error: OAuthError, grantType: string | undefined, client: RegisteredClient | undefined): Promise<void> {
    // Policy refusals were recorded with their decision already.
    if (error.reason === POLICY_DENIED) return;
    await this.audit.record({
      type: 'token.refused',
      outcome: error.error === 'invalid_client' ? 'failure' : 'denied',
      actor: client ? { type: client.kind, id: client.id } : { type: 'anonymous', id: null },
      agentId: client?.kind === 'agent' ? client.id : null,
      data: {
        grant_type: grantType ?? null,
        error: error.error,
        error_description: error.description,
        reason: error.reason ?? null,
      },
    });
  }
}
