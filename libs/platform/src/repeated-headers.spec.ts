import type { NextFunction, Request, Response } from 'express';
import { InvalidRequestError } from '@writ/oauth';
import { refuseRepeatedHeaders, repeatedSingletonHeader } from './repeated-headers';

describe('repeatedSingletonHeader', () => {
  it('names a single-valued header sent twice, in any case', () => {
    expect(repeatedSingletonHeader(['Authorization', 'Bearer a', 'authorization', 'Bearer b'])).toBe('authorization');
    expect(repeatedSingletonHeader(['Content-Type', 'application/json', 'Host', 'x', 'CONTENT-TYPE', 'text/plain'])).toBe('content-type');
    expect(repeatedSingletonHeader(['DPoP', 'a.b.c', 'dpop', 'd.e.f'])).toBe('dpop');
  });

  it('passes list-valued headers repeated, and single-valued ones sent once', () => {
    expect(repeatedSingletonHeader(['Accept', 'a', 'Accept', 'b', 'Authorization', 'Bearer a', 'Content-Type', 'application/json'])).toBeUndefined();
    // Content-Encoding is a list (RFC 9110 8.4); a repeated X-Request-Id is joined by Node and then not well-formed (a new id is made).
    expect(repeatedSingletonHeader(['Content-Encoding', 'gzip', 'Content-Encoding', 'br', 'X-Request-Id', 'a', 'X-Request-Id', 'b'])).toBeUndefined();
    expect(repeatedSingletonHeader([])).toBeUndefined();
  });
});

describe('refuseRepeatedHeaders', () => {
  const run = (rawHeaders: string[]) => {
    const next = jest.fn() as jest.MockedFunction<NextFunction>;
    refuseRepeatedHeaders({ rawHeaders } as Request, {} as Response, next);
    return next.mock.calls[0][0] as unknown;
  };

  it('is a 400 invalid_request naming the header', () => {
    const error = run(['Authorization', 'Bearer a', 'Authorization', 'Bearer b']);
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect((error as InvalidRequestError).toJSON()).toEqual({ error: 'invalid_request', error_description: 'the authorization header is sent more than once' });
  });

  it('lets other requests through', () => {
    expect(run(['Authorization', 'Bearer a'])).toBeUndefined();
  });
});
