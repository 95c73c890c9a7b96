import type { OAuthError } from './oauth-error';
import {
  AccessDeniedError,
  AuthorizationPendingError,
  InsufficientScopeError,
  InvalidAuthorizationDetailsError,
  InvalidClientError,
  InvalidDpopProofError,
  InvalidGrantError,
  InvalidRequestError,
  InvalidScopeError,
  InvalidTargetError,
  InvalidTokenError,
  ServerError,
  TemporarilyUnavailableError,
  UnauthorizedClientError,
  UnsupportedGrantTypeError,
  UseDpopNonceError,
} from './oauth-errors';

describe('OAuth error classes', () => {
  const table: Array<[OAuthError, string, number]> = [
    [new InvalidRequestError('d'), 'invalid_request', 400],
    [new InvalidClientError('d'), 'invalid_client', 401],
    [new InvalidGrantError('d'), 'invalid_grant', 400],
    [new UnauthorizedClientError('d'), 'unauthorized_client', 400],
    [new UnsupportedGrantTypeError('d'), 'unsupported_grant_type', 400],
    [new InvalidScopeError('d'), 'invalid_scope', 400],
    [new InvalidTargetError('d'), 'invalid_target', 400],
    [new InvalidAuthorizationDetailsError('d'), 'invalid_authorization_details', 400],
    [new AuthorizationPendingError('d', { approvalId: 'apr_1', interval: 5 }), 'authorization_pending', 400],
    [new AccessDeniedError('d'), 'access_denied', 400],
    [new InvalidDpopProofError('d'), 'invalid_dpop_proof', 400],
    [new UseDpopNonceError('d'), 'use_dpop_nonce', 400],
    [new ServerError('d'), 'server_error', 500],
    [new TemporarilyUnavailableError('d'), 'temporarily_unavailable', 503],
    [new InvalidTokenError('d'), 'invalid_token', 401],
    [new InsufficientScopeError('d', { rule: 'action' }), 'insufficient_scope', 403],
  ];

  it.each(table)('%p has code %s and status %d', (error, code, status) => {
    expect(error.error).toBe(code);
    expect(error.status).toBe(status);
    expect(error.toJSON().error).toBe(code);
    expect(error.toJSON().error_description).toBe('d');
  });

  it('keeps one class per code: its own name, instanceof only itself and OAuthError', () => {
    const classes = [
      InvalidRequestError,
      InvalidClientError,
      InvalidGrantError,
      UnauthorizedClientError,
      UnsupportedGrantTypeError,
      InvalidScopeError,
      InvalidTargetError,
      InvalidAuthorizationDetailsError,
      AccessDeniedError,
      ServerError,
      TemporarilyUnavailableError,
    ];
    for (const ErrorClass of classes) {
      const error = new ErrorClass();
      expect(error.name).toBe(ErrorClass.name);
      expect(error).toBeInstanceOf(Error);
      expect(classes.filter((other) => error instanceof other)).toEqual([ErrorClass]);
    }
  });

  it('gives every class a non-empty default description', () => {
    for (const error of [
      new InvalidRequestError(),
      new InvalidClientError(),
      new InvalidGrantError(),
      new UnauthorizedClientError(),
      new UnsupportedGrantTypeError(),
      new InvalidScopeError(),
      new InvalidTargetError(),
      new InvalidAuthorizationDetailsError(),
      new AccessDeniedError(),
      new InvalidDpopProofError(),
      new UseDpopNonceError(),
      new ServerError(),
      new TemporarilyUnavailableError(),
      new InvalidTokenError(),
    ]) {
      expect(error.description.length).toBeGreaterThan(0);
    }
  });

  it('authorization_pending carries approval_id and interval', () => {
    const error = new AuthorizationPendingError('awaiting approval', { approvalId: 'apr_1', interval: 5 });
    expect(error.toJSON()).toEqual({
      error: 'authorization_pending',
      error_description: 'awaiting approval',
      approval_id: 'apr_1',
      interval: 5,
    });
    expect(error.approvalId).toBe('apr_1');
    expect(error.interval).toBe(5);
  });

  it('insufficient_scope names the failed rule and carries a Bearer challenge', () => {
    const error = new InsufficientScopeError('amount exceeds the grant', { rule: 'constraint:amount_max' });
    expect(error.toJSON()).toEqual({
      error: 'insufficient_scope',
      error_description: 'amount exceeds the grant',
      rule: 'constraint:amount_max',
    });
    expect(error.rule).toBe('constraint:amount_max');
    expect(error.wwwAuthenticate).toEqual({ scheme: 'Bearer', scope: undefined, algs: undefined });
  });

  it('invalid_token carries a challenge in the presented scheme', () => {
    expect(new InvalidTokenError('x').wwwAuthenticate?.scheme).toBe('Bearer');
    expect(new InvalidTokenError('x', { scheme: 'DPoP', algs: ['ES256'] }).wwwAuthenticate).toEqual({
      scheme: 'DPoP',
      algs: ['ES256'],
    });
  });

  it('DPoP errors are 400 without challenge at the token endpoint, 401 with one at a resource server', () => {
    expect(new InvalidDpopProofError('x').wwwAuthenticate).toBeUndefined();
    const atGateway = new InvalidDpopProofError('x', { resourceServer: true, algs: ['ES256'] });
    expect(atGateway.status).toBe(401);
    expect(atGateway.wwwAuthenticate).toEqual({ scheme: 'DPoP', algs: ['ES256'] });
    expect(new UseDpopNonceError('x', { resourceServer: true }).status).toBe(401);
    expect(new UseDpopNonceError('x').status).toBe(400);
  });

  it('token-endpoint errors carry no challenge', () => {
    expect(new InvalidClientError().wwwAuthenticate).toBeUndefined();
    expect(new InvalidRequestError('x').wwwAuthenticate).toBeUndefined();
  });

  it('keeps the audit reason off the wire', () => {
    const error = new InvalidClientError('client authentication failed', { reason: 'assertion_replay' });
    expect(error.reason).toBe('assertion_replay');
    expect(JSON.stringify(error)).not.toContain('assertion_replay');
  });
});
