import { Injectable } from '@nestjs/common';
import { AuditService } from '@writ/audit';
import { FormParams, OAuthError, readClientAssertion, safeToken, TooManyRequestsError } from '@writ/oauth';
import { FailureThrottle, FailureVerdict } from '@writ/platform';
import { ClientAuthenticator } from './client-authenticator.service';
import type { RegisteredClient } from './registered-client';

function tooMany(verdict: FailureVerdict): TooManyRequestsError {
  return new TooManyRequestsError(verdict.retryAfterSeconds, 'too many failed requests from this address or for this client', {
    reason: 'throttled',
  });
}

/** The client a request claims to be (unverified): the assertion's `iss`, else `client_id`. */
function claimedClientId(params: FormParams): string | undefined {
  try {
    return readClientAssertion(params).clientId;
  } catch {
    return params.get('client_id');
  }
}

/**
 * Throttling of the OAuth endpoints (token, introspection, revocation) for requests that end
 * without an authenticated client: counted per source address and per claimed client id (see
 * {@link FailureThrottle}); `429 temporarily_unavailable` with `Retry-After` past a limit.
 * Requests that authenticate never reach the counters.
 */
@Injectable()
export class OAuthFailureGate {
  constructor(
    private readonly throttle: FailureThrottle,
    private readonly clients: ClientAuthenticator,
    private readonly audit: AuditService,
  ) {}

  /**
   * Client authentication of the introspection and revocation endpoints, throttled: a failure
   * is counted, audited as `client.authentication_failed` (up to the cap), and answered `429`
   * past a limit.
   */
  async authenticate(
    endpoint: 'introspection' | 'revocation',
    params: FormParams,
    authorization: string | undefined,
    source: string,
  ): Promise<RegisteredClient> {
    await this.before(source);
    try {
      // Read fresh: these endpoints act on the registration without checking its version later.
      return await this.clients.authenticate(params, authorization, true);
    } catch (error) {
      if (error instanceof OAuthError) {
        const claimed = claimedClientId(params);
        await this.failed(source, params, () =>
          this.audit.record({
            type: 'client.authentication_failed',
            outcome: 'failure',
            actor: { type: 'anonymous', id: null },
            data: { endpoint, error: error.error, reason: error.reason ?? null, claimed_client_id: claimed ? safeToken(claimed) : null, source },
          }),
        );
      }
      throw error;
    }
  }

  /** Refuses, before any other work (and without database work), a source this instance knows is past its limit. */
  async before(source: string): Promise<void> {
    const verdict = await this.throttle.refuseIfBlocked('oauth', source);
    if (verdict) throw tooMany(verdict);
  }

  /**
   * Counts a failure without an authenticated client; runs `record` (its audit event) unless the
   * source already had its share of individual events this window; then throws `429` if a limit
   * is passed (otherwise the caller rethrows the original error).
   */
  async failed(source: string, params: FormParams, record: () => Promise<unknown>): Promise<void> {
    const verdict = await this.throttle.failure('oauth', source, claimedClientId(params));
    if (verdict.audit) await record();
    if (verdict.limited) throw tooMany(verdict);
  }
}
