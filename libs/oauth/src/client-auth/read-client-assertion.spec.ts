import { InvalidClientError } from '../errors/oauth-errors';
import { parseFormBody } from '../params/parse-form-body';
import { CLIENT_ASSERTION_TYPE_JWT_BEARER } from './client-assertion.constants';
import type { ClientAuthFailureReason } from './client-auth-failure';
import { readClientAssertion } from './read-client-assertion';

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** An unsigned-looking JWT: readClientAssertion never checks signatures. */
function jwt(payload: unknown, header: unknown = { alg: 'ES256', kid: 'k1' }): string {
  return `${b64(header)}.${b64(payload)}.c2lnbmF0dXJl`;
}

function form(fields: Record<string, string>) {
  return parseFormBody(new URLSearchParams(fields).toString());
}

function withAssertion(assertion: string, extra: Record<string, string> = {}) {
  return form({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT_BEARER, client_assertion: assertion, ...extra });
}

function reasonOf(fn: () => unknown): ClientAuthFailureReason {
  try {
    fn();
  } catch (error) {
    if (error instanceof InvalidClientError) {
      expect(error.status).toBe(401);
      return error.reason as ClientAuthFailureReason;
    }
    throw error;
  }
  throw new Error('expected invalid_client');
}

describe('readClientAssertion', () => {
  const valid = jwt({ iss: 'agent_1', sub: 'agent_1', aud: 'http://localhost:4000' });

  it('returns the claimed client id and the assertion', () => {
    expect(readClientAssertion(withAssertion(valid))).toEqual({ clientId: 'agent_1', assertion: valid });
  });

  it('accepts a matching client_id parameter', () => {
    expect(readClientAssertion(withAssertion(valid, { client_id: 'agent_1' })).clientId).toBe('agent_1');
  });

  it('refuses a client_id parameter naming another client', () => {
    expect(reasonOf(() => readClientAssertion(withAssertion(valid, { client_id: 'agent_2' })))).toBe('assertion_client_id_mismatch');
  });

  it('refuses client secrets, even next to a valid assertion', () => {
    const error = (() => {
      try {
        readClientAssertion(withAssertion(valid, { client_secret: 's3cr3t' }));
      } catch (e) {
        return e as InvalidClientError;
      }
      throw new Error('expected failure');
    })();
    expect(error.toJSON()).toEqual({ error: 'invalid_client', error_description: 'client secrets are not supported' });
    expect(JSON.stringify(error)).not.toContain('s3cr3t');
  });

  it('requires client authentication', () => {
    expect(reasonOf(() => readClientAssertion(form({ grant_type: 'client_credentials' })))).toBe('client_auth_missing');
    expect(reasonOf(() => readClientAssertion(form({ client_id: 'agent_1' })))).toBe('client_auth_missing');
  });

  it.each([
    ['missing', undefined],
    ['SAML', 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer'],
    ['differently cased', CLIENT_ASSERTION_TYPE_JWT_BEARER.toUpperCase()],
  ])('refuses a client_assertion_type %s', (_label, type) => {
    const fields: Record<string, string> = { client_assertion: valid };
    if (type !== undefined) fields.client_assertion_type = type;
    expect(reasonOf(() => readClientAssertion(form(fields)))).toBe('assertion_type');
  });

  it('requires the assertion itself', () => {
    expect(reasonOf(() => readClientAssertion(form({ client_assertion_type: CLIENT_ASSERTION_TYPE_JWT_BEARER })))).toBe('assertion_missing');
  });

  it.each([
    ['not a JWT', 'hello'],
    ['a JWE', 'a.b.c.d.e'],
    ['non-JSON payload', `${b64({ alg: 'ES256' })}.${Buffer.from('nope').toString('base64url')}.x`],
    ['a payload array', jwt(['agent_1'])],
    ['oversized', jwt({ iss: 'a', sub: 'a', pad: 'x'.repeat(9000) })],
  ])('refuses %s as malformed', (_label, assertion) => {
    expect(reasonOf(() => readClientAssertion(withAssertion(assertion)))).toBe('assertion_malformed');
  });

  it.each([
    ['missing iss', { sub: 'agent_1' }, 'assertion_issuer'],
    ['empty iss', { iss: '', sub: '' }, 'assertion_issuer'],
    ['numeric iss', { iss: 1, sub: 1 }, 'assertion_issuer'],
    ['sub different from iss', { iss: 'agent_1', sub: 'agent_2' }, 'assertion_subject'],
    ['missing sub', { iss: 'agent_1' }, 'assertion_subject'],
  ])('refuses %s', (_label, payload, reason) => {
    expect(reasonOf(() => readClientAssertion(withAssertion(jwt(payload))))).toBe(reason);
  });

  it('never echoes the assertion or its claims', () => {
    const assertion = jwt({ iss: 'agent_1', sub: 'secret-subject' });
    try {
      readClientAssertion(withAssertion(assertion));
    } catch (error) {
      const wire = JSON.stringify(error);
      expect(wire).not.toContain('secret-subject');
      expect(wire).not.toContain(assertion.split('.')[1]);
      return;
    }
    throw new Error('expected failure');
  });
});
