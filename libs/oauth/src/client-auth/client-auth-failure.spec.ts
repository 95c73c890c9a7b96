import { InvalidClientError } from '../errors/oauth-errors';
import { clientAuthenticationFailed } from './client-auth-failure';

describe('clientAuthenticationFailed', () => {
  it('builds a 401 invalid_client with the reason kept off the wire', () => {
    const error = clientAuthenticationFailed('assertion_replay');
    expect(error).toBeInstanceOf(InvalidClientError);
    expect(error.status).toBe(401);
    expect(error.reason).toBe('assertion_replay');
    expect(error.toJSON()).toEqual({
      error: 'invalid_client',
      error_description: 'client assertion has already been used',
    });
  });

  it('describes the audience rule of draft-ietf-oauth-rfc7523bis', () => {
    expect(clientAuthenticationFailed('assertion_audience').description).toBe('client assertion audience must be the issuer identifier');
  });

  it('does not distinguish unknown, inactive and misconfigured clients to the caller', () => {
    const descriptions = new Set(
      (['client_unknown', 'client_inactive', 'client_jwks_invalid'] as const).map((reason) => clientAuthenticationFailed(reason).description),
    );
    expect([...descriptions]).toEqual(['client authentication failed']);
  });

  it('keeps the cause for logs only', () => {
    const cause = new Error('internal');
    const error = clientAuthenticationFailed('assertion_signature', cause);
    expect(error.cause).toBe(cause);
    expect(JSON.stringify(error)).not.toContain('internal');
  });
});
