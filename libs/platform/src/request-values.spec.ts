import { contentTypeCharset, declaresUtf8, isIsoInstant, isUuid, loggablePath, requestTextProblem } from './request-values';
import { writValidationPipe } from './validation.pipe';
import { ValidationFailedError } from './http-exception.filter';

describe('request values', () => {
  it('accepts canonical UUIDs only', () => {
    expect(isUuid('3f1c2b7a-0d4e-4c5f-8a9b-1c2d3e4f5a6b')).toBe(true);
    expect(isUuid('-'.repeat(36))).toBe(false);
    expect(isUuid('3f1c2b7a0d4e4c5f8a9b1c2d3e4f5a6b')).toBe(false);
    expect(isUuid(42)).toBe(false);
  });

  it('accepts ISO instants, not whatever Date.parse reads', () => {
    expect(Number.isNaN(Date.parse('x 1'))).toBe(false);
    expect(isIsoInstant('x 1')).toBe(false);
    expect(isIsoInstant('2025-01-31T12:00:00.000Z')).toBe(true);
    expect(isIsoInstant('2025-01-31T12:00:00Z')).toBe(true);
    expect(isIsoInstant('2025-13-31T12:00:00Z')).toBe(false);
    expect(isIsoInstant('2025-01-31 12:00:00')).toBe(false);
    expect(isIsoInstant('2025-02-30T00:00:00Z')).toBe(false);
    expect(isIsoInstant('2025-01-31T24:00:00Z')).toBe(false);
    expect(isIsoInstant('0000-01-01T00:00:00Z')).toBe(false);
    expect(isIsoInstant('0001-01-01T00:00:00.123456Z')).toBe(true);
  });

  it('names control characters and lone surrogates', () => {
    expect(requestTextProblem('agent-1')).toBeUndefined();
    expect(requestTextProblem('caf\u00e9 \ud83d\ude00')).toBeUndefined();
    expect(requestTextProblem('x\u0000')).toBe('must not contain control characters');
    expect(requestTextProblem('x\u001b[31m')).toBe('must not contain control characters');
    expect(requestTextProblem('\ud800')).toBe('must be valid Unicode text');
  });
});

describe('writValidationPipe', () => {
  const pipe = writValidationPipe();
  const refusal = async (value: unknown, type: 'param' | 'query', data?: string) => {
    try {
      await pipe.transform(value, { type, data, metatype: String });
    } catch (error) {
      if (error instanceof ValidationFailedError) return error.fields;
      throw error;
    }
    return undefined;
  };

  it('refuses NUL and lone surrogates in route parameters and queries, naming them', async () => {
    expect(await refusal('x\u0000', 'param', 'id')).toEqual([{ field: 'id', message: 'must not contain control characters' }]);
    expect(await refusal({ agent_id: ['ok', '\udc00'] }, 'query')).toEqual([{ field: 'agent_id', message: 'must be valid Unicode text' }]);
    expect(await refusal('agent-1', 'param', 'id')).toBeUndefined();
  });
});

describe('contentTypeCharset and declaresUtf8', () => {
  it.each([
    ['application/json', undefined, true],
    ['application/json; charset=utf-8', 'utf-8', true],
    ['application/json;Charset="UTF-8"', 'utf-8', true],
    ['application/json; charset=utf8', 'utf8', true],
    ['application/json; charset=utf-16', 'utf-16', false],
    ['application/json; charset=', '', false],
    ['application/json; charset=""', '', false],
    ['application/json; charset=utf-8; charset=utf-16', 'utf-8, utf-16', false],
    ['application/json; charset=utf-8; charset=utf-8', 'utf-8, utf-8', false],
  ])('%s: charset %p, UTF-8 %p', (contentType, charset, utf8) => {
    expect(contentTypeCharset(contentType)).toBe(charset);
    expect(declaresUtf8(contentType)).toBe(utf8);
  });

  it('reads no header as UTF-8', () => {
    expect(declaresUtf8(undefined)).toBe(true);
  });
});

describe('loggablePath', () => {
  it('redacts a connect link in any case, keeps the callback and other paths, and bounds the length', () => {
    expect(loggablePath('/connect/k3yl1nk_abc')).toBe('/connect/[redacted]');
    expect(loggablePath('/CONNECT/k3yl1nk_abc/x')).toBe('/CONNECT/[redacted]/x');
    expect(loggablePath('/connect/callback')).toBe('/connect/callback');
    expect(loggablePath('/connect/callbackish')).toBe('/connect/[redacted]');
    expect(loggablePath('/v1/tasks/abc')).toBe('/v1/tasks/abc');
    expect(loggablePath(`/x/${'a'.repeat(5000)}`)).toHaveLength(1025);
  });
});
