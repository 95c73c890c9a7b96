import { InsufficientScopeError, InvalidDpopProofError, InvalidRequestError, InvalidTokenError } from './oauth-errors';
import { buildWwwAuthenticate, wwwAuthenticateFor } from './www-authenticate';

describe('buildWwwAuthenticate', () => {
  it('renders a bare Bearer challenge when the request had no credentials', () => {
    expect(buildWwwAuthenticate({ scheme: 'Bearer' })).toBe('Bearer realm="writ"');
  });

  it('renders the RFC 6750 invalid_token challenge', () => {
    expect(buildWwwAuthenticate({ scheme: 'Bearer', error: 'invalid_token', errorDescription: 'the access token expired' })).toBe(
      'Bearer realm="writ", error="invalid_token", error_description="the access token expired"',
    );
  });

  it('renders the DPoP variant with algs', () => {
    expect(
      buildWwwAuthenticate({
        scheme: 'DPoP',
        error: 'invalid_dpop_proof',
        errorDescription: 'bad proof',
        algs: ['ES256', 'EdDSA'],
      }),
    ).toBe('DPoP realm="writ", error="invalid_dpop_proof", error_description="bad proof", algs="ES256 EdDSA"');
  });

  it('names the protected resource metadata (RFC 9728 section 5.1)', () => {
    const error = new InvalidTokenError('the access token has expired').withResourceMetadata(
      'https://gw.example/.well-known/oauth-protected-resource/connectors/x',
    );
    expect(wwwAuthenticateFor(error)).toBe(
      'Bearer realm="writ", error="invalid_token", error_description="the access token has expired", ' +
        'resource_metadata="https://gw.example/.well-known/oauth-protected-resource/connectors/x"',
    );
    expect(new InvalidRequestError('bad').withResourceMetadata('https://gw.example/m').wwwAuthenticate).toBeUndefined();
  });

  it('joins several challenges', () => {
    expect(buildWwwAuthenticate([{ scheme: 'Bearer' }, { scheme: 'DPoP', algs: ['ES256'] }])).toBe('Bearer realm="writ", DPoP realm="writ", algs="ES256"');
  });

  it('escapes quotes and backslashes', () => {
    expect(buildWwwAuthenticate({ scheme: 'Bearer', error: 'invalid_token', errorDescription: 'a "quoted" \\ path' })).toBe(
      'Bearer realm="writ", error="invalid_token", error_description="a \\"quoted\\" \\\\ path"',
    );
  });

  it('cannot be used to inject header lines (CR/LF) or non-ASCII', () => {
    const value = buildWwwAuthenticate({
      scheme: 'Bearer',
      error: 'invalid_token',
      errorDescription: 'x\r\nSet-Cookie: session=1\u00e9',
    });
    expect(value).not.toMatch(/[\r\n]/);
    expect(value).toMatch(/^[\x20-\x7e]*$/);
    expect(value).toContain('error_description="x??Set-Cookie: session=1?"');
  });

  it('drops malformed algs and omits algs on Bearer', () => {
    expect(buildWwwAuthenticate({ scheme: 'DPoP', algs: ['ES256', 'bad alg"'] })).toBe('DPoP realm="writ", algs="ES256"');
    expect(buildWwwAuthenticate({ scheme: 'Bearer', algs: ['ES256'] })).toBe('Bearer realm="writ"');
  });

  it('renders scope and a custom realm', () => {
    expect(buildWwwAuthenticate({ scheme: 'Bearer', realm: 'gw', error: 'insufficient_scope', scope: 'a b' })).toBe(
      'Bearer realm="gw", error="insufficient_scope", scope="a b"',
    );
  });

  it('refuses unknown schemes and empty lists', () => {
    expect(() => buildWwwAuthenticate({ scheme: 'Digest' as 'Bearer' })).toThrow(TypeError);
    expect(() => buildWwwAuthenticate([])).toThrow(TypeError);
  });

  it('renders a Basic challenge (a client that authenticated with it) with its realm only', () => {
    expect(buildWwwAuthenticate({ scheme: 'Basic', error: 'invalid_client', errorDescription: 'no' })).toBe('Basic realm="writ"');
  });
});

describe('wwwAuthenticateFor', () => {
  it('renders the challenge of an invalid_token error', () => {
    expect(wwwAuthenticateFor(new InvalidTokenError('the access token expired'))).toBe(
      'Bearer realm="writ", error="invalid_token", error_description="the access token expired"',
    );
  });

  it('renders the DPoP challenge of a resource-server proof error', () => {
    expect(wwwAuthenticateFor(new InvalidDpopProofError('bad proof', { resourceServer: true, algs: ['ES256'] }))).toBe(
      'DPoP realm="writ", error="invalid_dpop_proof", error_description="bad proof", algs="ES256"',
    );
  });

  it('renders insufficient_scope', () => {
    expect(wwwAuthenticateFor(new InsufficientScopeError('outside the grant', { rule: 'action' }))).toBe(
      'Bearer realm="writ", error="insufficient_scope", error_description="outside the grant"',
    );
  });

  it('is undefined for errors without a challenge', () => {
    expect(wwwAuthenticateFor(new InvalidRequestError('x'))).toBeUndefined();
  });
});
