import { agentResponseHeaders, encodedBody, upstreamRequestHeaders } from './forward-headers';

describe('upstreamRequestHeaders', () => {
  it('drops the agent credentials, cookies, hop-by-hop and override headers and injects the upstream credential', () => {
    const headers = upstreamRequestHeaders(
      {
        authorization: 'Bearer agent-token',
        cookie: 'session=1',
        connection: 'keep-alive, x-secret-hop',
        'x-secret-hop': '1',
        'keep-alive': 'timeout=5',
        'transfer-encoding': 'chunked',
        host: 'gateway',
        'x-http-method-override': 'DELETE',
        'x-forwarded-for': '10.0.0.1',
        'content-type': 'application/json',
        accept: 'application/json',
        'x-api-key': 'agent-chosen',
        'content-length': '999',
        dpop: 'proof',
        'accept-encoding': 'gzip, br',
      },
      { name: 'x-api-key', value: 'upstream-secret' },
      12,
    );
    expect(headers).toEqual({
      'content-type': 'application/json',
      accept: 'application/json',
      'x-api-key': 'upstream-secret',
      'content-length': '12',
      'accept-encoding': 'identity',
    });
  });

  it('drops every routing and client-IP header an upstream framework might trust', () => {
    const routing = {
      'x-original-url': '/admin',
      'x-rewrite-url': '/admin',
      'x-forwarded-host': 'evil',
      'x-forwarded-prefix': '/x',
      'x-forwarded-port': '1',
      forwarded: 'for=1.2.3.4',
      'true-client-ip': '127.0.0.1',
      'x-client-ip': '127.0.0.1',
      'x-real-ip': '127.0.0.1',
      'x-original-host': 'evil',
    };
    expect(upstreamRequestHeaders({ ...routing, accept: '*/*' }, { name: 'authorization', value: 'Bearer up' }, 0)).toEqual({
      accept: '*/*',
      authorization: 'Bearer up',
      'accept-encoding': 'identity',
    });
  });
});

describe('agentResponseHeaders', () => {
  it('drops hop-by-hop headers, cookies, upstream challenges and any header echoing a secret', () => {
    expect(
      agentResponseHeaders(
        {
          'content-type': 'application/json',
          'set-cookie': ['a=1'],
          connection: 'close',
          'www-authenticate': 'Bearer',
          'x-echo': 'Bearer sk_live_123',
          location: '/v1/payouts/po_1',
        },
        ['sk_live_123'],
      ),
    ).toEqual({ 'content-type': 'application/json', location: '/v1/payouts/po_1' });
  });
});

describe('encodedBody', () => {
  it('names a content coding other than identity, which the gateway cannot search', () => {
    expect(encodedBody({})).toBeUndefined();
    expect(encodedBody({ 'content-encoding': 'identity' })).toBeUndefined();
    expect(encodedBody({ 'content-encoding': ' Identity ' })).toBeUndefined();
    expect(encodedBody({ 'content-encoding': 'gzip' })).toBe('gzip');
    expect(encodedBody({ 'content-encoding': 'identity, br' })).toBe('identity, br');
    expect(encodedBody({ 'content-encoding': ['identity', 'zstd'] })).toBe('identity,zstd');
  });
});
