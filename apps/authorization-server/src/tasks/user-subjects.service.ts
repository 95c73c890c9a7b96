import { Injectable } from '@nestjs/common';
import { IdentityProviderUnavailableError, UserTokenError, UserTokenVerifier, type VerifiedUser } from '@writ/accounts';
import { TemporarilyUnavailableError } from '@writ/oauth';
import { ValidationFailedError } from '@writ/platform';

/** What a caller may send to name a user: their token, or an assertion. */
export interface UserProof {
  user_token?: string;
  user?: Record<string, unknown>;
}

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
    if (proof.user_token !== undefined && proof.user !== undefined) {
      throw new ValidationFailedError([{ field: 'user', message: 'give user_token or user, not both' }], 'the user is ambiguous');
    }
    if (proof.user_token !== undefined) {
      try {
        return await this.verifier.verify(proof.user_token);
      } catch (error) {
        // The provider's keys out of reach: 503 with Retry-After, the token not blamed.
        if (error instanceof IdentityProviderUnavailableError) {
          throw new TemporarilyUnavailableError(`${error.message}; retry later`, { reason: 'identity_provider_unavailable', cause: error });
        }
        if (!(error instanceof UserTokenError)) throw error;
        throw new ValidationFailedError(
          [{ field: 'user_token', message: `${error.message} (${error.code})` }],
          'the user token is not acceptable proof of a user',
        );
      }
    }
    if (proof.user !== undefined) {
      const { iss, sub, ...rest } = proof.user;
      const fields = Object.keys(rest).map((key) => ({ field: `user.${key}`, message: 'unknown field' }));
      if (typeof iss !== 'string' || iss.length === 0 || iss.length > 2048)
        fields.push({ field: 'user.iss', message: 'must be the issuer of a trusted identity provider' });
      if (typeof sub !== 'string' || sub.length === 0 || sub.length > 255) fields.push({ field: 'user.sub', message: 'must be 1 to 255 characters' });
      if (fields.length > 0) throw new ValidationFailedError(fields, 'the user is invalid');
      if (!(await this.verifier.mayAssert(orchestratorId, iss as string))) {
        throw new ValidationFailedError(
          [{ field: 'user', message: `this orchestrator is not trusted to assert users of ${String(iss).slice(0, 200)}: send the user's token as user_token` }],
          'the user is not verified',
        );
      }
      return { issuer: iss as string, subject: sub as string };
    }
    if (required)
      throw new ValidationFailedError(
        [{ field: 'user_token', message: 'is required (or user, when this orchestrator may assert users)' }],
        'a verified user is required',
      );
    return undefined;
  }
}
