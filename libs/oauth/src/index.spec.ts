import * as oauth from '@writ/oauth';

describe('@writ/oauth public surface', () => {
  it.each([
    'OAuthError',
    'isOAuthError',
    'InvalidRequestError',
    'InvalidClientError',
    'InvalidGrantError',
    'UnauthorizedClientError',
    'UnsupportedGrantTypeError',
    'InvalidScopeError',
    'InvalidTargetError',
    'InvalidAuthorizationDetailsError',
    'AuthorizationPendingError',
    'AccessDeniedError',
    'InvalidDpopProofError',
    'UseDpopNonceError',
    'ServerError',
    'TemporarilyUnavailableError',
    'InvalidTokenError',
    'InsufficientScopeError',
    'buildWwwAuthenticate',
    'wwwAuthenticateFor',
    'parseFormBody',
    'requireParam',
    'optionalParam',
    'readClientAssertion',
    'verifyClientAssertion',
    'authenticateClientAssertion',
    'clientAuthenticationFailed',
    'validateClientJwks',
    'JwksValidationError',
    'parseAuthorizationDetails',
    'checkWithinAllowed',
    'matchConstraint',
    'parseTokenExchangeRequest',
    'connectorResourceUrl',
  ])('exports %s', (name) => {
    expect(typeof (oauth as Record<string, unknown>)[name]).toBe('function');
  });

  it('exports the discovery values', () => {
    expect(oauth.CLIENT_ASSERTION_SIGNING_ALGS).toEqual(['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519']);
    expect(oauth.CONNECTOR_DETAIL_TYPE).toBe('connector');
    expect(oauth.GRANT_TYPE_TOKEN_EXCHANGE).toBe('urn:ietf:params:oauth:grant-type:token-exchange');
  });

  it('keeps the allow-list immutable', () => {
    expect(Object.isFrozen(oauth.CLIENT_ASSERTION_SIGNING_ALGS)).toBe(true);
  });
});
