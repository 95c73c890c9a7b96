import { InvalidRequestError } from '@writ/oauth';
import { parseRequestTarget } from './request-target';

describe('parseRequestTarget', () => {
  it('splits the connector, the upstream path, its decoded segments and the raw query', () => {
    expect(parseRequestTarget('/connectors/payments/v1/payouts/po%201?expand=a&x=1')).toEqual({
      connectorId: 'payments',
      upstreamPath: '/v1/payouts/po%201',
      segments: ['v1', 'payouts', 'po 1'],
      query: 'expand=a&x=1',
    });
  });

  it('accepts path parameters on an ordinary segment, forwarded as they are', () => {
    expect(parseRequestTarget('/connectors/payments/v1/items;v=2/x..y')).toMatchObject({
      upstreamPath: '/v1/items;v=2/x..y',
      segments: ['v1', 'items;v=2', 'x..y'],
    });
  });

  it('accepts an encoded semicolon in the query (no parser splits on it)', () => {
    expect(parseRequestTarget('/connectors/payments/v1?q=a%3Bb').query).toBe('q=a%3Bb');
  });

  it('accepts the connector root', () => {
    expect(parseRequestTarget('/connectors/payments')).toMatchObject({ upstreamPath: '/', segments: [] });
  });

  it.each([
    ['dot-dot segment', '/connectors/payments/v1/../admin'],
    ['dot segment', '/connectors/payments/./v1/payouts'],
    ['encoded dot', '/connectors/payments/v1/%2e%2e/admin'],
    ['encoded dot, upper case', '/connectors/payments/v1/%2E%2E/admin'],
    ['encoded slash', '/connectors/payments/v1%2fpayouts'],
    ['double encoding', '/connectors/payments/v1/%252e%252e/admin'],
    ['encoded backslash', '/connectors/payments/v1/%5cadmin'],
    ['backslash', '/connectors/payments/v1\\..\\admin'],
    ['empty segment', '/connectors/payments//v1/payouts'],
    ['trailing slash', '/connectors/payments/v1/payouts/'],
    ['NUL', '/connectors/payments/v1/%00'],
    ['control character', '/connectors/payments/v1/%0a'],
    ['absolute form', 'http://evil.example/connectors/payments/v1/payouts'],
    ['bad escape', '/connectors/payments/v1/%zz'],
    ['bad connector id', '/connectors/..%2f/v1'],
    ['not a connector path', '/admin/v1'],
    ['fragment', '/connectors/payments/v1#x'],
    ['dot-dot segment with path parameters (Tomcat, Jetty)', '/connectors/payments/v1/payouts/..;/refund'],
    ['dot-dot segment with named path parameters', '/connectors/payments/v1/payouts/..;jsessionid=x/refund'],
    ['dot segment with path parameters', '/connectors/payments/v1/.;x/payouts'],
    ['segment of path parameters only', '/connectors/payments/v1/;x/payouts'],
    ['semicolon in query (Rack 2, old Python and Go split on it)', '/connectors/payments/v1?repo=allowed&x=1;repo=evil'],
    ['raw space in query', '/connectors/payments/v1?a=b c'],
  ])('refuses %s', (_name, target) => {
    expect(() => parseRequestTarget(target)).toThrow(InvalidRequestError);
  });
});
