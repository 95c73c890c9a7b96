import { Injectable } from '@nestjs/common';
import { AuditService } from '@writ/audit';
import { FormParams, OAuthError, InvalidClientError, InvalidRequestError, UnauthorizedClientError } from '@writ/oauth';
import { ClientAuthenticator } from '../client-auth/client-authenticator.service';
import { DpopProofs } from '../dpop/dpop-proofs.service';
import { OAuthFailureGate } from '../client-auth/oauth-failure-gate.service';
import type { RegisteredClient } from '../client-auth/registered-client';
import type { ClientAssertionJti } from '../client-auth/client-assertion-jti';
import { GrantRegistry } from './grant-registry';
import type { GrantHandler } from './grant-handler';
import { StaleDecisionError } from './access-token-issuer.service';
import { PolicySync } from '@writ/platform';
import { POLICY_DENIED } from '@writ/grants';
import type { TokenResponseDto } from './token-response.dto';
import { TaskGrantRefusal } from './task-grant-refusal';

/** How many times a request is decided when what it was decided with keeps changing. */
const MAX_DECISIONS = 3;

/** The client registration or the policy kept changing while the request was decided: retry. */
class DecisionUnsettledError extends OAuthError {
  readonly error = 'temporarily_unavailable' as const;
  readonly status = 503;
  readonly retryAfterSeconds = 1;
  constructor() {
    super('the client registration or the policy is changing; retry', { reason: 'decision_unsettled' });
  }
}

function allowedKind(handler: GrantHandler, client: RegisteredClient): void {
  if (!handler.clientKinds.includes(client.kind)) throw new UnauthorizedClientError(`this grant_type is not available to ${client.kind}s`);
}

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
    private readonly policy: PolicySync,
  ) {}

  /**
   * Answers one token request, or throws the OAuth error to send. A refusal without an
   * authenticated client is throttled per `source` address and claimed client id, and audited
   * one event each only up to a cap per window (then summarised); an authenticated client's
   * refusals are each one event.
   */
  async exchange(params: FormParams, authorization: string | undefined, dpopHeader: string | string[] | undefined, source: string): Promise<TokenResponseDto> {
    let client: RegisteredClient | undefined;
    let assertionJti: ClientAssertionJti | undefined;
    const grantType = params.get('grant_type');
    await this.gate.before(source);
    try {
      if (!grantType) throw new InvalidRequestError('grant_type is required');
      const handler = this.grants.get(grantType);
      if (handler.spendsAssertionJti) ({ client, jti: assertionJti } = await this.clients.authenticateDeferringJti(params, authorization));
      else client = await this.clients.authenticate(params, authorization);
      allowedKind(handler, client);
      const dpop = dpopHeader === undefined ? undefined : await this.dpopProofs.check(dpopHeader);
      for (let decisions = 1; ; decisions += 1) {
        try {
          const response = await handler.handle({ params, client, dpop, assertionJti });
          // A handler that spends the jti spends it with what it issues; never answer with it unspent.
          if (assertionJti?.pending) throw new Error(`grant ${handler.grantType} answered without spending the client assertion jti`);
          return response;
        } catch (failure) {
          // Authenticated or decided on a copy not yet dropped (its change is being notified):
          // nothing was recorded; authenticate or decide again on fresh data, as a fresh
          // instance would have from the start. A refusal is recorded under the client only if
          // a fresh read of its registration still authenticates it (policy refusals were
          // checked where they were recorded).
          let stale = failure instanceof StaleDecisionError ? failure.what : undefined;
          if (!stale && failure instanceof OAuthError && failure.reason !== POLICY_DENIED && !(await this.clients.isCurrent(client))) stale = 'client';
          if (!stale) throw failure;
          if (decisions >= MAX_DECISIONS) throw new DecisionUnsettledError();
          if (stale === 'policy') {
            await this.policy.syncAgain();
            continue;
          }
          // Until authenticated again, as unauthenticated as a fresh instance's request would be
          // (its refusal throttled per source, its jti left unspent).
          const [claimedId, deferred] = [client.id, assertionJti];
          [client, assertionJti] = [undefined, undefined];
          client = await this.clients.reauthenticate(params, authorization, claimedId);
          assertionJti = deferred;
          allowedKind(handler, client);
        }
      }
    } catch (caught) {
      let error = caught;
      // An assertion is spent whatever its request came to; a replay is answered as one.
      if (assertionJti?.pending) {
        try {
          await assertionJti.consume();
        } catch (spendError) {
          // A refusal gives way to the replay (or to the outage that kept the jti from being
          // spent); an outage or a failure of this request is answered as it was (e.g. a batch
          // whose commit was lost with its connection: 503, not a replay).
          if (error instanceof OAuthError) error = spendError;
        }
      }
      // A replay found when the jti was spent: answered as an unauthenticated request, as before.
      if (error instanceof InvalidClientError && error.reason === 'assertion_replay') client = undefined;
      if (error instanceof OAuthError) {
        const refusal = error;
        if (client) await this.recordRefusal(refusal, grantType, client);
        else await this.gate.failed(source, params, () => this.recordRefusal(refusal, grantType, undefined));
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
      taskId: error instanceof TaskGrantRefusal ? error.taskId : null,
      data: {
        grant_type: grantType ?? null,
        error: error.error,
        error_description: error.description,
        reason: error.reason ?? null,
      },
    });
  }
}
