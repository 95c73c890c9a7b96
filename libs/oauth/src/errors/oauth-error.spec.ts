import { isOAuthError, OAuthError, type OAuthErrorOptions } from './oauth-error';
import { InvalidRequestError } from './oauth-errors';

class TestError extends OAuthError {
  readonly error = 'test_error';
  readonly status = 418;
  constructor(description: string, options?: OAuthErrorOptions) {
    super(description, options);
  }
}

describe('OAuthError', () => {
  it('serialises to the RFC 6749 §5.2 body', () => {
    expect(new TestError('it broke').toJSON()).toEqual({ error: 'test_error', error_description: 'it broke' });
  });

  it('appends extra members after error and error_description', () => {
    const body = new TestError('x', { extra: { interval: 5 } }).toJSON();
    expect(Object.keys(body)).toEqual(['error', 'error_description', 'interval']);
    expect(body.interval).toBe(5);
  });

  it('does not let extra members replace error or error_description', () => {
    const body = new TestError('real', { extra: { error: 'spoofed', error_description: 'spoofed' } }).toJSON();
    expect(body).toEqual({ error: 'test_error', error_description: 'real' });
  });

  it('keeps an extra named __proto__ as plain data instead of changing the prototype', () => {
    const extra = JSON.parse('{"__proto__": {"polluted": true}}') as Record<string, unknown>;
    const body = new TestError('x', { extra }).toJSON() as Record<string, unknown>;
    expect(Object.getPrototypeOf(body)).toBe(Object.prototype);
    expect((body as { polluted?: unknown }).polluted).toBeUndefined();
  });

  it('never serialises the reason, the cause or the stack', () => {
    const error = new TestError('x', { reason: 'internal_code', cause: new Error('db password=hunter2') });
    const json = JSON.stringify(error);
    expect(json).toBe('{"error":"test_error","error_description":"x"}');
    expect(error.reason).toBe('internal_code');
    expect(error.cause).toBeInstanceOf(Error);
  });

  it('is a real Error with the subclass name', () => {
    const error = new InvalidRequestError('bad');
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe('InvalidRequestError');
    expect(error.message).toBe('bad');
    expect(isOAuthError(error)).toBe(true);
    expect(isOAuthError(new Error('x'))).toBe(false);
    expect(isOAuthError({ error: 'invalid_request', status: 400 })).toBe(false);
  });
});
