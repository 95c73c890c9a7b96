import { Injectable } from '@nestjs/common';
import { type IdentityProviderRow, IdentityProviderUnavailableError, UserTokenError, UserTokenVerifier, type VerifiedUser } from '@writ/accounts';
import { TemporarilyUnavailableError } from '@writ/oauth';
import { ValidationFailedError } from '@writ/platform';
import type { Pool } from 'pg';

/** What a caller may send to name a user: their token, or an assertion. */
export interface UserProof {
  user_token?: string;
  user?: Record<string, unknown>;
}

/** A verified user, how it was proven, and the identity provider's registration that vouched for it. */
export interface ProvenUser {
  user: VerifiedUser;
  proof: 'user_token' | 'asserted';
  provider: IdentityProviderRow;
}

const tokenRefused = (message: string) => new ValidationFailedError([{ field: 'user_token', message }], 'the user token is not acceptable proof of a user');

const assertionRefused = (issuer: string) =>
  new ValidationFailedError(
    [{ field: 'user', message: `this orchestrator is not trusted to assert users of ${issuer.slice(0, 200)}: send the user's token as user_token` }],
    'the user is not verified',
  );

/**
 * Turns what an orchestrator sends about a user into a verified user: the user's token from a
 * trusted identity provider (`iss`, `aud`, `exp`, signature), or `{iss, sub}` asserted by an
 * orchestrator registered as trusted to assert users of that issuer. Anything else is a 400
 * naming the field; a provider whose keys cannot be fetched is a 503 (`temporarily_unavailable`).
 */
@Injectable()
export class UserSubjects {
  constructor(private readonly verifier: UserTokenVerifier) {}

  /** The verified user, `undefined` when none is given (and not `required`). */
  async verify(orchestratorId: string, proof: UserProof, required = false): Promise<VerifiedUser | undefined> {
    return (await this.prove(orchestratorId, proof, required))?.user;
  }

  /** As {@link verify}, with how the user was proven and by which registration (for {@link refusalAt}). */
  async prove(orchestratorId: string, proof: UserProof, required = false): Promise<ProvenUser | undefined> {
    if (proof.user_token !== undefined && proof.user !== undefined) {
      throw new ValidationFailedError([{ field: 'user', message: 'give user_token or user, not both' }], 'the user is ambiguous');
    }
    if (proof.user_token !== undefined) {
      try {
        const { user, provider } = await this.verifier.verifyWithProvider(proof.user_token);
        return { user, provider, proof: 'user_token' };
      } catch (error) {
        // The provider's keys out of reach: 503 with Retry-After, the token not blamed.
        if (error instanceof IdentityProviderUnavailableError) {
          throw new TemporarilyUnavailableError(`${error.message}; retry later`, { reason: 'identity_provider_unavailable', cause: error });
        }
        if (!(error instanceof UserTokenError)) throw error;
        throw tokenRefused(`${error.message} (${error.code})`);
      }
    }
    if (proof.user !== undefined) {
      const { iss, sub, ...rest } = proof.user;
      const fields = Object.keys(rest).map((key) => ({ field: `user.${key}`, message: 'unknown field' }));
      if (typeof iss !== 'string' || iss.length === 0 || iss.length > 2048)
        fields.push({ field: 'user.iss', message: 'must be the issuer of a trusted identity provider' });
      if (typeof sub !== 'string' || sub.length === 0 || sub.length > 255) fields.push({ field: 'user.sub', message: 'must be 1 to 255 characters' });
      if (fields.length > 0) throw new ValidationFailedError(fields, 'the user is invalid');
      const provider = await this.verifier.trustedProvider(iss as string);
      if (!provider?.asserting_orchestrators.includes(orchestratorId)) throw assertionRefused(String(iss));
      return { user: { issuer: iss as string, subject: sub as string }, proof: 'asserted', provider };
    }
    if (required)
      throw new ValidationFailedError(
        [{ field: 'user_token', message: 'is required (or user, when this orchestrator may assert users)' }],
        'a verified user is required',
      );
    return undefined;
  }

  /**
   * Checks `proven` again in the caller's transaction, right before what it commits: the answer a
   * fresh request would get when the identity provider's registration was removed since the user
   * was verified (or was registered again with other keys or another audience, or no longer lists
   * this orchestrator among those that may assert its users); `undefined` when it still stands.
   * The registration stays share-locked until the caller commits, so a removal waits for it.
   */
  async refusalAt(tx: Pick<Pool, 'query'>, orchestratorId: string, proven: ProvenUser): Promise<Error | undefined> {
    const now = await this.verifier.providerAt(tx, proven.user.issuer);
    if (proven.proof === 'asserted') return now?.asserting_orchestrators.includes(orchestratorId) ? undefined : assertionRefused(proven.user.issuer);
    if (!now) return tokenRefused('the user token is not from a trusted identity provider (untrusted_issuer)');
    if (now.jwks_uri !== proven.provider.jwks_uri || now.audience !== proven.provider.audience) {
      return tokenRefused(
        'the identity provider was registered again (other keys or audience) while the user token was verified: send the request again (provider_changed)',
      );
    }
    return undefined;
  }
}
