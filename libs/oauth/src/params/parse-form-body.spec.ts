import { InvalidRequestError } from '../errors/oauth-errors';
import { optionalParam, parseFormBody, requireParam } from './parse-form-body';

function errorOf(fn: () => unknown): InvalidRequestError {
  try {
    fn();
  } catch (error) {
    if (error instanceof InvalidRequestError) return error;
    throw error;
  }
  throw new Error('expected an InvalidRequestError');
}

describe('parseFormBody', () => {
  it('parses a token request', () => {
    const params = parseFormBody('grant_type=client_credentials&scope=tasks');
    expect([...params]).toEqual([
      ['grant_type', 'client_credentials'],
      ['scope', 'tasks'],
    ]);
  });

  it('decodes like URLSearchParams: + is a space, percent-escapes are UTF-8', () => {
    const params = parseFormBody('a=hello+world&b=%22caf%C3%A9%22&c=1%2B1%3D2&d%5B%5D=x');
    expect(params.get('a')).toBe('hello world');
    expect(params.get('b')).toBe('"café"');
    expect(params.get('c')).toBe('1+1=2');
    expect(params.get('d[]')).toBe('x');
  });

  it('decodes a JSON authorization_details value', () => {
    const json = JSON.stringify([{ type: 'connector', connector: 'payments', actions: ['payouts.create'] }]);
    const params = parseFormBody(new URLSearchParams({ authorization_details: json }).toString());
    expect(params.get('authorization_details')).toBe(json);
  });

  it('accepts a Buffer', () => {
    expect(parseFormBody(Buffer.from('a=1&b=%C3%A9')).get('b')).toBe('é');
  });

  it('keeps only the first = as the separator', () => {
    expect(parseFormBody('a=b=c').get('a')).toBe('b=c');
  });

  it('treats empty values as absent (RFC 6749 §3.1)', () => {
    const params = parseFormBody('a=&b&c=1');
    expect(params.has('a')).toBe(false);
    expect(params.has('b')).toBe(false);
    expect(params.get('c')).toBe('1');
    expect(optionalParam(params, 'a')).toBeUndefined();
  });

  it('skips empty pairs and handles an empty body', () => {
    expect([...parseFormBody('&&a=1&&')]).toEqual([['a', '1']]);
    expect(parseFormBody('').size).toBe(0);
    expect(parseFormBody(Buffer.alloc(0)).size).toBe(0);
  });

  it('refuses a repeated parameter (RFC 6749 §3.1)', () => {
    const error = errorOf(() => parseFormBody('grant_type=a&grant_type=b'));
    expect(error.toJSON()).toEqual({
      error: 'invalid_request',
      error_description: 'parameter grant_type is included more than once',
    });
    expect(error.reason).toBe('duplicate_parameter');
  });

  it('refuses a repetition hidden behind percent-encoding', () => {
    expect(errorOf(() => parseFormBody('scope=a&%73cope=b')).description).toBe('parameter scope is included more than once');
  });

  it('counts an empty occurrence as a repetition (a reader keeping the last copy would see nothing)', () => {
    for (const body of ['scope=&scope=tasks', 'scope=tasks&scope=', 'scope&scope=tasks', 'scope=&scope=']) {
      expect(errorOf(() => parseFormBody(body)).description).toBe('parameter scope is included more than once');
    }
  });

  it('never echoes values in the duplicate description', () => {
    const error = errorOf(() => parseFormBody('client_assertion=eyJsecret&client_assertion=eyJother'));
    expect(error.description).not.toContain('eyJ');
  });

  it('sanitises a hostile parameter name in the description', () => {
    const error = errorOf(() => parseFormBody('a%0D%0Ab=1&a%0D%0Ab=2'));
    expect(error.description).toBe('parameter a??b is included more than once');
  });

  it.each([
    ['a stray percent', 'a=%'],
    ['a short escape', 'a=%4'],
    ['a non-hex escape', 'a=%zz'],
    ['an escape in a name', '%g1=x'],
    ['an invalid UTF-8 sequence', 'a=%C3'],
    ['an overlong UTF-8 encoding', 'a=%C0%AF'],
    ['a lone surrogate', 'a=%ED%A0%80'],
    ['a pair without a name', '=value'],
  ])('refuses %s', (_label, body) => {
    const error = errorOf(() => parseFormBody(body));
    expect(error.error).toBe('invalid_request');
    expect(error.reason).toBe('malformed_form_body');
  });

  it('refuses a Buffer that is not UTF-8', () => {
    expect(errorOf(() => parseFormBody(Buffer.from([0x61, 0x3d, 0xff]))).reason).toBe('malformed_form_body');
  });

  it('refuses more than maxParameters pairs', () => {
    const body = Array.from({ length: 6 }, (_, i) => `p${i}=1`).join('&');
    expect(parseFormBody(body, { maxParameters: 6 }).size).toBe(6);
    expect(errorOf(() => parseFormBody(body, { maxParameters: 5 })).reason).toBe('too_many_parameters');
  });

  it('counts empty pairs against the limit too', () => {
    expect(errorOf(() => parseFormBody('a&b&c', { maxParameters: 2 })).reason).toBe('too_many_parameters');
  });

  it('is not fooled by prototype-named parameters', () => {
    const params = parseFormBody('__proto__=x&constructor=y');
    expect(params.get('__proto__')).toBe('x');
    expect(params.get('constructor')).toBe('y');
    expect(params.get('toString')).toBeUndefined();
  });
});

describe('requireParam / optionalParam', () => {
  const params = parseFormBody('grant_type=client_credentials');

  it('returns present values', () => {
    expect(requireParam(params, 'grant_type')).toBe('client_credentials');
    expect(optionalParam(params, 'grant_type')).toBe('client_credentials');
  });

  it('reports a missing required parameter', () => {
    expect(errorOf(() => requireParam(params, 'scope')).toJSON()).toEqual({
      error: 'invalid_request',
      error_description: 'missing required parameter scope',
    });
  });

  it('treats an empty value as missing', () => {
    expect(() => requireParam(parseFormBody('scope='), 'scope')).toThrow(InvalidRequestError);
  });
});
