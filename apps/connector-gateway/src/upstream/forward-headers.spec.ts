import type { ConnectorOperation } from '@writ/database';
import {
  agentResponseHeaders,
  allowedRequestHeaders,
  compressedTransfer,
  encodedBody,
  isMethodOverrideHeader,
  uncheckedHeaderProblem,
  unlistedRequestHeader,
  upstreamRequestHeaders,
} from './forward-headers';

describe('upstreamRequestHeaders', () => {
  it('drops Range and If-Range (any spelling) when a credential is injected, and keeps them otherwise', () => {
    const incoming = { range: 'bytes=10-20', 'if-range': '"etag"', if_range: '"etag"', 'request-range': 'bytes=1-2', accept: '*/*' };
    expect(upstreamRequestHeaders(incoming, { name: 'authorization', value: 'Bearer s' }, 0)).toEqual({
      accept: '*/*',
      'accept-encoding': 'identity',
      authorization: 'Bearer s',
    });
    expect(upstreamRequestHeaders(incoming, undefined, 0)).toMatchObject({ range: 'bytes=10-20', 'if-range': '"etag"' });
  });

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

describe('upstreamRequestHeaders: underscores (Rack and CGI read _ as -)', () => {
  it('drops underscore spellings of routing, hop-by-hop and framing headers and of the credential name', () => {
    const headers = upstreamRequestHeaders(
      {
        x_forwarded_for: '127.0.0.1',
        x_original_url: '/admin',
        x_real_ip: '127.0.0.1',
        true_client_ip: '127.0.0.1',
        transfer_encoding: 'chunked',
        content_length: '1',
        proxy_authorization: 'Basic x',
        x_api_key: 'agent-chosen',
        connection: 'x-secret_hop',
        x_secret_hop: '1',
        x_trace: 'kept',
        accept: '*/*',
      },
      { name: 'x-api-key', value: 'upstream-secret' },
      0,
    );
    expect(headers).toEqual({ x_trace: 'kept', accept: '*/*', 'accept-encoding': 'identity', 'x-api-key': 'upstream-secret' });
  });

  it('drops the dashed form of a credential named with an underscore', () => {
    expect(upstreamRequestHeaders({ 'x-api-key': 'agent-chosen' }, { name: 'x_api_key', value: 'upstream-secret' }, 0)).toEqual({
      'accept-encoding': 'identity',
      x_api_key: 'upstream-secret',
    });
  });
});

describe('upstreamRequestHeaders: headers a constraint checked', () => {
  it('sends each once, with the checked value under the catalogue name, whatever spellings came in', () => {
    const incoming = { 'stripe-account': 'acct_1, acct_other', stripe_account: 'acct_other', accept: '*/*' };
    expect(upstreamRequestHeaders(incoming, { name: 'authorization', value: 'Bearer s' }, 0, { 'Stripe-Account': 'acct_1' })).toEqual({
      accept: '*/*',
      'Stripe-Account': 'acct_1',
      'accept-encoding': 'identity',
      authorization: 'Bearer s',
    });
  });
});

describe('request_headers', () => {
  const operation = (request_headers?: unknown): ConnectorOperation => ({
    name: 'charges.create',
    method: 'POST',
    path: '/v1/charges',
    risk: 'write',
    constraints: { account: { in: 'header', field: 'Stripe-Account', op: 'eq' } },
    ...(request_headers !== undefined ? { request_headers: request_headers as string[] } : {}),
  });

  it('allows nothing beyond the defaults when no list is declared (undefined: forward as before)', () => {
    expect(allowedRequestHeaders(operation())).toBeUndefined();
  });

  it('allows the listed names (any case, _ as -), the safe set and the header constraints', () => {
    const allowed = allowedRequestHeaders(operation(['Idempotency_Key']))!;
    expect(unlistedRequestHeader(['IDEMPOTENCY-KEY', 'k', 'Accept', '*/*', 'stripe-account', 'acct_1', 'traceparent', 'x'], allowed)).toBeUndefined();
    // Dropped for every call: never refused, never forwarded.
    expect(
      unlistedRequestHeader(['Host', 'h', 'Authorization', 'Bearer t', 'Connection', 'keep-alive', 'X-Forwarded-For', '1.2.3.4', 'DPoP', 'p'], allowed),
    ).toBeUndefined();
    expect(unlistedRequestHeader(['Accept', '*/*', 'X-Tenant-ID', 't'], allowed)).toBe('X-Tenant-ID');
    expect(unlistedRequestHeader(['OpenAI_Project', 'p'], allowed)).toBe('OpenAI_Project');
  });

  it('lets only the safe set and header constraints through a list that is not an array (a row edited by hand)', () => {
    const allowed = allowedRequestHeaders(operation('Stripe-Version'))!;
    expect(unlistedRequestHeader(['Stripe-Version', '1'], allowed)).toBe('Stripe-Version');
  });

  it('forwards only allowed headers', () => {
    const allowed = allowedRequestHeaders(operation(['Idempotency-Key']))!;
    expect(upstreamRequestHeaders({ 'idempotency-key': 'k', 'x-tenant-id': 't', accept: '*/*' }, undefined, 0, {}, allowed)).toEqual({
      'idempotency-key': 'k',
      accept: '*/*',
      'accept-encoding': 'identity',
    });
  });
});

describe('isMethodOverrideHeader', () => {
  it.each(['x-http-method-override', 'x_http_method_override', 'X_HTTP_METHOD', 'x-method_override'])('knows %s', (name) => {
    expect(isMethodOverrideHeader(name)).toBe(true);
  });

  it('knows other headers are not', () => {
    expect(isMethodOverrideHeader('x_trace')).toBe(false);
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

describe('compressedTransfer', () => {
  it('names a transfer coding other than chunked, which undici passes on compressed', () => {
    expect(compressedTransfer({})).toBeUndefined();
    expect(compressedTransfer({ 'transfer-encoding': 'chunked' })).toBeUndefined();
    expect(compressedTransfer({ 'transfer-encoding': ' Chunked ' })).toBeUndefined();
    expect(compressedTransfer({ 'transfer-encoding': 'gzip, chunked' })).toBe('gzip, chunked');
    expect(compressedTransfer({ 'transfer-encoding': ['deflate', 'chunked'] })).toBe('deflate,chunked');
  });
});

describe('uncheckedHeaderProblem', () => {
  it.each(['content-type', 'keep-alive, Content-Type', 'content_type', 'content-encoding', 'Mcp-Session-Id'])(
    'refuses a Connection header naming %p (the upstream would not get what was checked)',
    (connection) => {
      expect(uncheckedHeaderProblem({ connection, 'content-type': 'application/json' })).toMatchObject({ reason: 'connection_header' });
    },
  );

  it.each(['content_type', 'content_encoding', 'mcp_session_id'])('refuses %p (Puma and Unicorn read it as its dashed form)', (name) => {
    expect(uncheckedHeaderProblem({ [name]: 'x', 'content-type': 'application/json' })).toMatchObject({ reason: 'header_spelling' });
  });

  it('passes ordinary headers, Connection options and other underscored names', () => {
    expect(uncheckedHeaderProblem({ connection: 'keep-alive, x-hop', 'x-hop': '1', 'content-type': 'application/json', x_trace: '1' })).toBeUndefined();
    expect(uncheckedHeaderProblem({ connection: 'close' })).toBeUndefined();
    expect(uncheckedHeaderProblem({})).toBeUndefined();
  });
});
