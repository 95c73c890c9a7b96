import type { Request } from 'express';
import { InvalidRequestError } from '@writ/oauth';
import { formParams } from './form-request';

const request = (contentType: string | undefined, body = 'grant_type=x', url = '/oauth2/token') =>
  ({ headers: contentType === undefined ? {} : { 'content-type': contentType }, body: Buffer.from(body), url }) as unknown as Request;

describe('formParams', () => {
  it('reads a UTF-8 form, with or without a charset parameter', () => {
    expect(formParams(request('application/x-www-form-urlencoded')).get('grant_type')).toBe('x');
    expect(formParams(request('application/x-www-form-urlencoded; charset=UTF-8')).get('grant_type')).toBe('x');
    expect(formParams(request('Application/X-WWW-Form-Urlencoded;charset="utf-8"')).get('grant_type')).toBe('x');
  });

  it.each(['utf-16', 'UTF-16LE', 'iso-8859-1', 'windows-1252', '"utf-7"', ''])('refuses a form declared in charset %p', (charset) => {
    const call = () => formParams(request(`application/x-www-form-urlencoded; charset=${charset}`));
    expect(call).toThrow(InvalidRequestError);
    expect(call).toThrow(/charset .*the form body must be UTF-8/);
  });

  it('refuses another content type, and parameters in the query', () => {
    expect(() => formParams(request(undefined))).toThrow('the request body must be application/x-www-form-urlencoded');
    expect(() => formParams(request('application/x-www-form-urlencoded', 'a=b', '/oauth2/token?a=b'))).toThrow(/query string/);
  });

  it('refuses two charset parameters, even when one says UTF-8 (parsers disagree on which wins)', () => {
    expect(() => formParams(request('application/x-www-form-urlencoded; charset=utf-8; charset=utf-16'))).toThrow(
      'unsupported charset "utf-8, utf-16": the form body must be UTF-8',
    );
  });
});
