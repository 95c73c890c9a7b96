import type { OAuthError } from '../errors/oauth-error';
import { parseFormBody } from '../params/parse-form-body';
import { parseTokenExchangeRequest, type ParseTokenExchangeOptions } from './parse-token-exchange-request';
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT } from './token-exchange.constants';

const GATEWAY = 'http://localhost:4001';
const RESOURCE = `${GATEWAY}/connectors/payments`;
const DETAILS = [
  {
    type: 'connector',
    connector: 'payments',
    actions: ['payouts.create'],
    constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' },
  },
];

function request(overrides: Record<string, string | undefined> = {}) {
  const fields: Record<string, string | undefined> = {
    grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: 'eyJ.task.token',
    subject_token_type: TOKEN_TYPE_JWT,
    authorization_details: JSON.stringify(DETAILS),
    ...overrides,
  };
  const defined = Object.entries(fields).filter((entry): entry is [string, string] => entry[1] !== undefined);
  return parseFormBody(new URLSearchParams(defined).toString());
}

function errorOf(params: ReturnType<typeof request>, options: ParseTokenExchangeOptions = {}): OAuthError {
  try {
    parseTokenExchangeRequest(params, options);
  } catch (error) {
    return error as OAuthError;
  }
  throw new Error('expected an error');
}

describe('parseTokenExchangeRequest: accepted', () => {
  it('returns the typed request', () => {
    expect(parseTokenExchangeRequest(request())).toEqual({
      subjectToken: 'eyJ.task.token',
      subjectTokenType: TOKEN_TYPE_JWT,
      requestedTokenType: TOKEN_TYPE_ACCESS_TOKEN,
      resource: undefined,
      audience: undefined,
      authorizationDetails: DETAILS,
      connector: 'payments',
    });
  });

  it('accepts the access_token requested_token_type, resource and an equal audience', () => {
    const parsed = parseTokenExchangeRequest(request({ requested_token_type: TOKEN_TYPE_ACCESS_TOKEN, resource: RESOURCE, audience: RESOURCE }), {
      gatewayUrl: GATEWAY,
    });
    expect(parsed.resource).toBe(RESOURCE);
    expect(parsed.audience).toBe(RESOURCE);
  });

  it('accepts several entries for the same connector', () => {
    const details = [DETAILS[0], { type: 'connector', connector: 'payments', actions: ['payouts.list'] }];
    expect(parseTokenExchangeRequest(request({ authorization_details: JSON.stringify(details) })).authorizationDetails).toHaveLength(2);
  });

  it('ignores unknown parameters and client authentication parameters', () => {
    expect(() => parseTokenExchangeRequest(request({ client_assertion: 'x', client_assertion_type: 'y', foo: 'bar' }))).not.toThrow();
  });

  it('treats empty optional parameters as absent', () => {
    expect(parseTokenExchangeRequest(request({ scope: '', resource: '', actor_token: '' })).resource).toBeUndefined();
  });
});

describe('parseTokenExchangeRequest: refused', () => {
  it.each([
    ['subject_token', 'invalid_request', 'missing required parameter subject_token'],
    ['subject_token_type', 'invalid_request', 'missing required parameter subject_token_type'],
    ['authorization_details', 'invalid_request', 'missing required parameter authorization_details'],
  ])('requires %s', (name, code, description) => {
    expect(errorOf(request({ [name]: undefined })).toJSON()).toEqual({ error: code, error_description: description });
  });

  it.each([
    'urn:ietf:params:oauth:token-type:access_token',
    'urn:ietf:params:oauth:token-type:id_token',
    'urn:ietf:params:oauth:token-type:saml2',
    'urn:ietf:params:oauth:token-type:JWT',
  ])('refuses subject_token_type %s', (type) => {
    expect(errorOf(request({ subject_token_type: type })).toJSON()).toEqual({
      error: 'invalid_request',
      error_description: 'unsupported subject_token_type',
    });
  });

  it.each(['urn:ietf:params:oauth:token-type:refresh_token', 'urn:ietf:params:oauth:token-type:jwt'])('refuses requested_token_type %s', (type) => {
    expect(errorOf(request({ requested_token_type: type })).toJSON()).toEqual({
      error: 'invalid_request',
      error_description: 'unsupported requested_token_type',
    });
  });

  it.each([[{ actor_token: 'eyJ.actor' }], [{ actor_token_type: TOKEN_TYPE_JWT }], [{ actor_token: 'eyJ.actor', actor_token_type: TOKEN_TYPE_JWT }]])(
    'refuses actor tokens %p',
    (fields) => {
      expect(errorOf(request(fields)).toJSON()).toEqual({
        error: 'invalid_request',
        error_description: 'actor_token is not supported',
      });
    },
  );

  it('refuses scope with invalid_scope', () => {
    expect(errorOf(request({ scope: 'payments:write' })).error).toBe('invalid_scope');
  });

  it.each([
    ['a relative reference', '/connectors/payments'],
    ['a bare word', 'payments'],
    ['a fragment', `${RESOURCE}#frag`],
    ['an empty fragment', `${RESOURCE}#`],
    ['surrounding whitespace', ` ${RESOURCE}`],
    ['a backslash', 'http:\\\\localhost:4001\\connectors\\payments'],
    ['a scheme only', 'http:'],
  ])('refuses a resource with %s (invalid_target)', (_label, resource) => {
    expect(errorOf(request({ resource })).error).toBe('invalid_target');
  });

  it('refuses an audience that differs from the resource, or comes without one', () => {
    expect(errorOf(request({ resource: RESOURCE, audience: 'payments' })).toJSON()).toEqual({
      error: 'invalid_target',
      error_description: 'audience must equal resource',
    });
    expect(errorOf(request({ audience: RESOURCE })).error).toBe('invalid_target');
  });

  it('refuses a resource that is not the requested connector when the gateway URL is known', () => {
    expect(errorOf(request({ resource: `${GATEWAY}/connectors/github` }), { gatewayUrl: GATEWAY }).toJSON()).toEqual({
      error: 'invalid_target',
      error_description: 'resource must be the URL of the requested connector',
    });
    expect(errorOf(request({ resource: 'https://evil.example/connectors/payments' }), { gatewayUrl: GATEWAY }).error).toBe('invalid_target');
  });

  it('refuses locations other than the connector URL when the gateway URL is known', () => {
    const details = (locations: string[]) => JSON.stringify([{ ...DETAILS[0], locations }]);
    expect(errorOf(request({ authorization_details: details([RESOURCE, 'https://evil.example/']) }), { gatewayUrl: GATEWAY }).toJSON()).toEqual({
      error: 'invalid_authorization_details',
      error_description: 'authorization_details[0].locations[1] must be the URL of the connector',
    });
    expect(
      parseTokenExchangeRequest(request({ authorization_details: details([RESOURCE]) }), { gatewayUrl: GATEWAY }).authorizationDetails[0].locations,
    ).toEqual([RESOURCE]);
  });

  it('refuses entries for several connectors (one token, one audience)', () => {
    const details = [DETAILS[0], { type: 'connector', connector: 'github', actions: ['repo.issues.list'] }];
    expect(errorOf(request({ authorization_details: JSON.stringify(details) })).toJSON()).toEqual({
      error: 'invalid_authorization_details',
      error_description: 'all authorization_details entries must name the same connector',
    });
  });

  it('reports malformed authorization_details as invalid_authorization_details', () => {
    expect(errorOf(request({ authorization_details: 'not json' })).error).toBe('invalid_authorization_details');
    expect(errorOf(request({ authorization_details: '[{"type":"x"}]' })).description).toBe('unknown authorization_details type "x"');
  });

  it('honours maxAuthorizationDetails', () => {
    const details = JSON.stringify([DETAILS[0], DETAILS[0], DETAILS[0]]);
    expect(errorOf(request({ authorization_details: details }), { maxAuthorizationDetails: 2 }).error).toBe('invalid_authorization_details');
  });

  it('refuses an oversized subject token', () => {
    expect(errorOf(request({ subject_token: 'x'.repeat(20_000) })).error).toBe('invalid_request');
  });

  it('never echoes the subject token', () => {
    const error = errorOf(request({ subject_token: 'eyJsecret', subject_token_type: 'urn:x' }));
    expect(JSON.stringify(error)).not.toContain('eyJsecret');
  });
});
