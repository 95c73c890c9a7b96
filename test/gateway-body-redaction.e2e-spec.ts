import { randomBytes } from 'node:crypto';
import { IncomingHttpHeaders, request as httpRequest, ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { decodeJwt } from 'jose';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields } from './support/grant-flow';
import { MockUpstream, ReceivedRequest, startMockUpstream } from './support/mock-upstreams';
import { TestClient, tokenRequest } from './support/oauth-client';
import { seedAgent, seedConnector, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';

const BEARER_SECRET = 'sk_live_echo_7c1e9a42d0b35f';
const HEADER_SECRET = 'hdr-key/9b2f+51e0a7c=';
const CLIENT_SECRET = 'oauth-client-secret-3a9d77';

const OPERATIONS = ['small', 'split', 'split-length', 'large', 'gzip', 'sse', 'plain', 'encoded', 'range', 'partial', 'redirect', 'transfer-gzip'].map(
  (name) => ({
    name: `echo.${name}`,
    method: 'GET',
    path: `/echo/${name}`,
    risk: 'read',
    constraints: {},
  }),
);
const ACTIONS = OPERATIONS.map((operation) => operation.name);
const CONNECTORS = ['echo-bearer', 'echo-header', 'echo-oauth'] as const;
type ConnectorId = (typeof CONNECTORS)[number];

/** The large body: this many pieces of filler, each followed by the echoed credential. */
const LARGE_PIECES = 40;
const LARGE_FILLER = 16 * 1024 - 7;

/** A body with the start of a secret but not all of it. */
const PLAIN_BODY = `{"note":"keys look like ${BEARER_SECRET.slice(0, -1)}"}`;

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms).unref());

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A GET whose answer is read as raw bytes (no decompression, no normalisation), `onData` seeing each chunk. */
function rawGet(url: string, headers: Record<string, string>, onData?: (soFar: Buffer) => void): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'GET', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        onData?.(Buffer.concat(chunks));
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * Upstreams that echo the credential the gateway injected (a debug route, an error page quoting
 * `Authorization`, an SSE stream echoing its input): the agent must never get it, in any body,
 * however the body is cut into chunks, and an upstream that compresses although asked not to
 * is refused rather than passed on unread.
 */
describe('gateway: credentials echoed in upstream bodies', () => {
  let services: TestServices;
  let agent: TestClient;
  const upstreams = {} as Record<ConnectorId, MockUpstream>;
  /** Access tokens the OAuth upstream's token endpoint issued. */
  const issuedTokens: string[] = [];
  /** Lets the SSE routes send their second event. */
  let releaseSse: () => void = () => undefined;
  let taskToken: string;
  /** One credential per connector and operation (reads carry no use budget). */
  const credentials = new Map<string, string>();
  /** The credential of the last call to each connector. */
  const lastCredential = {} as Record<ConnectorId, string>;

  /** The credential as the upstream received it: the full header value. */
  const echoed = (connector: ConnectorId, request: ReceivedRequest): string =>
    String((connector === 'echo-header' ? request.headers['x-api-key'] : request.headers.authorization) ?? 'none');

  /** Every secret of a connector the agent must never see: the raw value and the full header value. */
  const secretsOf = (connector: ConnectorId): string[] =>
    connector === 'echo-bearer'
      ? [BEARER_SECRET, `Bearer ${BEARER_SECRET}`]
      : connector === 'echo-header'
        ? [HEADER_SECRET]
        : [CLIENT_SECRET, ...issuedTokens, ...issuedTokens.map((token) => `Bearer ${token}`)];

  function echoRoutes(connector: ConnectorId) {
    const text = (request: ReceivedRequest) => echoed(connector, request);
    return {
      'GET /echo/small': (request: ReceivedRequest, response: ServerResponse) => {
        const body = JSON.stringify({ seen_authorization: text(request), accept_encoding: request.headers['accept-encoding'] ?? null });
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
        response.end(body);
      },
      // The credential split between two writes, far enough apart in time to arrive as two chunks.
      'GET /echo/split': async (request: ReceivedRequest, response: ServerResponse) => {
        const body = `{"error":"invalid request","authorization":"${text(request)}"}`;
        const cut = body.indexOf(text(request)) + Math.floor(text(request).length / 2);
        response.writeHead(400, { 'content-type': 'application/json' });
        response.write(body.slice(0, cut));
        await pause(60);
        response.end(body.slice(cut));
      },
      'GET /echo/split-length': async (request: ReceivedRequest, response: ServerResponse) => {
        const body = `debug: ${text(request)}\n`;
        const cut = body.indexOf(text(request)) + 3;
        response.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
        response.write(body.slice(0, cut));
        await pause(60);
        response.end(body.slice(cut));
      },
      'GET /echo/large': async (request: ReceivedRequest, response: ServerResponse) => {
        response.writeHead(200, { 'content-type': 'text/plain' });
        for (let index = 0; index < LARGE_PIECES; index += 1) {
          const piece = `${String(index % 10).repeat(LARGE_FILLER + index)}${text(request)}`;
          // Written in two parts cut inside the credential, at a different place each time.
          const cut = LARGE_FILLER + index + (index % text(request).length);
          if (!response.write(piece.slice(0, cut))) await new Promise((resolve) => response.once('drain', resolve));
          if (!response.write(piece.slice(cut))) await new Promise((resolve) => response.once('drain', resolve));
        }
        response.end('end');
      },
      'GET /echo/plain': (_request: ReceivedRequest, response: ServerResponse) => {
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(PLAIN_BODY)) });
        response.end(PLAIN_BODY);
      },
      // The credential echoed URL-encoded (a redirect URL, a form) and base64-encoded inside longer texts, at each alignment.
      'GET /echo/encoded': (request: ReceivedRequest, response: ServerResponse) => {
        const value = text(request);
        const lower = (encoded: string) => encoded.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase());
        const body = JSON.stringify({
          next: `https://app.example/cb?auth=${encodeURIComponent(value)}&x=1`,
          form: lower(new URLSearchParams({ auth: value, x: '1' }).toString()),
          base64: ['', 'a', 'ab'].map((before) => Buffer.from(`${before}authorization: ${value}\n`).toString('base64')),
          base64url: ['', 'a', 'ab'].map((before) => Buffer.from(`${before}${value}`).toString('base64url')),
          html: `<p>${value.replace(/[/=]/g, (c) => `&#x${c.charCodeAt(0).toString(16).toUpperCase()};`)}</p>`,
        });
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
        response.end(body);
      },
      // Honours Range: a slice of the echo would hold no whole occurrence of the credential.
      'GET /echo/range': (request: ReceivedRequest, response: ServerResponse) => {
        const body = Buffer.from(`debug: ${text(request)}\n`);
        const range = /^bytes=(\d+)-(\d+)$/.exec(String(request.headers.range ?? ''));
        if (!range) {
          response.writeHead(200, { 'content-type': 'text/plain', 'accept-ranges': 'bytes', 'content-length': String(body.length) });
          response.end(body);
          return;
        }
        const [from, to] = [Number(range[1]), Math.min(Number(range[2]), body.length - 1)];
        response.writeHead(206, {
          'content-type': 'text/plain',
          'content-range': `bytes ${from}-${to}/${body.length}`,
          'content-length': String(to - from + 1),
        });
        response.end(body.subarray(from, to + 1));
      },
      // A redirect carrying the credential URL-encoded in its Location, and base64 in another header.
      'GET /echo/redirect': (request: ReceivedRequest, response: ServerResponse) => {
        response.writeHead(302, {
          location: `https://app.example/cb?auth=${encodeURIComponent(text(request))}`,
          'x-debug': Buffer.from(`seen ${text(request)}`).toString('base64'),
          'x-kept': 'yes',
        });
        response.end();
      },
      // Answers a part although asked for none.
      'GET /echo/partial': (request: ReceivedRequest, response: ServerResponse) => {
        const body = Buffer.from(`debug: ${text(request)}\n`).subarray(10, 20);
        response.writeHead(206, { 'content-type': 'text/plain', 'content-range': `bytes 10-19/99`, 'content-length': String(body.length) });
        response.end(body);
      },
      // Compressed as a transfer coding (the gateway offers none in TE: RFC 9112 forbids it), framed chunked.
      'GET /echo/transfer-gzip': (request: ReceivedRequest, response: ServerResponse) => {
        response.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'gzip, chunked' });
        response.end(gzipSync(JSON.stringify({ seen_authorization: text(request) })));
      },
      // An upstream that ignores Accept-Encoding: identity.
      'GET /echo/gzip': (request: ReceivedRequest, response: ServerResponse) => {
        const body = gzipSync(JSON.stringify({ seen_authorization: text(request) }));
        response.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'content-length': String(body.length) });
        response.end(body);
      },
      // An event stream echoing its input: the first event must reach the agent before the second is sent.
      'GET /echo/sse': async (request: ReceivedRequest, response: ServerResponse) => {
        response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        response.write('event: message\ndata: {"progress":1}\n\n');
        await new Promise<void>((resolve) => (releaseSse = resolve));
        response.end(`event: message\ndata: {"echo":"${text(request)}"}\n\n`);
      },
    };
  }

  beforeAll(async () => {
    upstreams['echo-bearer'] = await startMockUpstream((headers) => headers.authorization === `Bearer ${BEARER_SECRET}`, echoRoutes('echo-bearer'));
    upstreams['echo-header'] = await startMockUpstream((headers) => headers['x-api-key'] === HEADER_SECRET, echoRoutes('echo-header'));
    const basic = `Basic ${Buffer.from(`writ-gateway:${CLIENT_SECRET}`).toString('base64')}`;
    upstreams['echo-oauth'] = await startMockUpstream(
      (headers) => headers.authorization === basic || issuedTokens.some((token) => headers.authorization === `Bearer ${token}`),
      {
        'POST /oauth/token': (_request, response) => {
          const token = `oauth_at_${randomBytes(12).toString('hex')}`;
          issuedTokens.push(token);
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end(JSON.stringify({ access_token: token, token_type: 'Bearer', expires_in: 3600 }));
        },
        ...echoRoutes('echo-oauth'),
      },
    );
    services = await startTestServices({ gateway: createGatewayApp });
    const { pool, masterKey } = services.runtime;
    agent = await seedAgent(pool, 'agent-1');
    const orchestrator = await seedOrchestrator(pool, 'orch-1', ['agent-1']);
    for (const connector of CONNECTORS) await seedConnector(pool, connector, OPERATIONS, upstreams[connector].url);
    await setConnectorCredential(pool, masterKey, 'echo-bearer', { type: 'bearer', token: BEARER_SECRET });
    await setConnectorCredential(pool, masterKey, 'echo-header', { type: 'header', name: 'X-Api-Key', value: HEADER_SECRET });
    await setConnectorCredential(pool, masterKey, 'echo-oauth', {
      type: 'oauth2_client_credentials',
      token_url: `${upstreams['echo-oauth'].url}/oauth/token`,
      client_id: 'writ-gateway',
      client_secret: CLIENT_SECRET,
    });
    const allowed = CONNECTORS.map((connector) => ({ type: 'connector', connector, actions: ACTIONS }));
    taskToken = (await createTask(services, orchestrator, { allowed })).task_token;
  });

  afterAll(async () => {
    await services.close();
    for (const upstream of Object.values(upstreams)) await upstream.close();
  });

  async function call(connector: ConnectorId, name: string, onData?: (soFar: Buffer) => void, extra: Record<string, string> = {}): Promise<RawResponse> {
    const key = `${connector} ${name}`;
    if (!credentials.has(key)) {
      const details = [{ type: 'connector', connector, actions: [`echo.${name}`] }];
      const response = await tokenRequest(services.issuer, agent, exchangeFields(taskToken, details));
      if (response.status !== 200) throw new Error(`exchange failed: ${response.text}`);
      credentials.set(key, response.body.access_token);
    }
    lastCredential[connector] = credentials.get(key)!;
    const headers = { authorization: `Bearer ${lastCredential[connector]}`, 'accept-encoding': 'gzip, br', ...extra };
    return rawGet(`${services.gatewayUrl}/connectors/${connector}/echo/${name}`, headers, onData);
  }

  /** The `gateway.upstream` event of the last call made with the connector's credential. */
  async function upstreamEvent(connector: ConnectorId): Promise<Record<string, unknown>> {
    await services.runtime.audit.drain();
    const { rows } = await services.runtime.pool.query<{ data: Record<string, unknown>; text: string }>(
      `SELECT data, data::text AS text FROM audit_events WHERE type = 'gateway.upstream' AND data->>'jti' = $1 ORDER BY seq DESC LIMIT 1`,
      [decodeJwt(lastCredential[connector]).jti],
    );
    expect(rows).toHaveLength(1);
    for (const secret of secretsOf(connector)) expect(rows[0].text).not.toContain(secret);
    return rows[0].data;
  }

  function expectNoSecret(connector: ConnectorId, response: RawResponse): void {
    // The OAuth connector's secrets include the access tokens its token endpoint issued to the gateway.
    if (connector === 'echo-oauth') expect(issuedTokens.length).toBeGreaterThan(0);
    for (const secret of secretsOf(connector)) {
      expect(response.body.includes(Buffer.from(secret))).toBe(false);
      expect(JSON.stringify(response.headers)).not.toContain(secret);
    }
    if (response.headers['content-length'] !== undefined) expect(Number(response.headers['content-length'])).toBe(response.body.length);
  }

  const masked = (connector: ConnectorId, request: ReceivedRequest) => echoed(connector, request).replace(/[^ ]+$/, (token) => '*'.repeat(token.length));
  const last = (connector: ConnectorId) => upstreams[connector].received[upstreams[connector].received.length - 1];

  describe.each(CONNECTORS)('%s', (connector) => {
    it('masks the credential in a small JSON body, same length, asking the upstream for identity', async () => {
      const response = await call(connector, 'small');
      expect(response.status).toBe(200);
      expectNoSecret(connector, response);
      const request = last(connector);
      expect(request.headers['accept-encoding']).toBe('identity');
      const body = JSON.parse(response.body.toString('utf8'));
      expect(body).toEqual({ seen_authorization: masked(connector, request), accept_encoding: 'identity' });
      expect(body.seen_authorization).toMatch(connector === 'echo-header' ? /^\*+$/ : /^Bearer \*+$/);
      expect(await upstreamEvent(connector)).toMatchObject({ status: 200, redacted: 1 });
    });

    it('masks a credential split between two chunks (chunked and with Content-Length)', async () => {
      const chunked = await call(connector, 'split');
      expect(chunked.status).toBe(400);
      expectNoSecret(connector, chunked);
      expect(JSON.parse(chunked.body.toString('utf8')).authorization).toBe(masked(connector, last(connector)));
      expect(await upstreamEvent(connector)).toMatchObject({ status: 400, redacted: 1 });

      const sized = await call(connector, 'split-length');
      expect(sized.status).toBe(200);
      expect(sized.headers['content-length']).toBeDefined();
      expectNoSecret(connector, sized);
      expect(sized.body.toString('utf8')).toBe(`debug: ${masked(connector, last(connector))}\n`);
      expect(await upstreamEvent(connector)).toMatchObject({ status: 200, redacted: 1 });
    });

    it('masks every occurrence in a large chunked body, cut at every kind of place', async () => {
      const response = await call(connector, 'large');
      expect(response.status).toBe(200);
      expectNoSecret(connector, response);
      const shown = masked(connector, last(connector));
      let expected = '';
      for (let index = 0; index < LARGE_PIECES; index += 1) expected += `${String(index % 10).repeat(LARGE_FILLER + index)}${shown}`;
      expect(response.body.toString('utf8')).toBe(`${expected}end`);
      expect(await upstreamEvent(connector)).toMatchObject({ status: 200, redacted: LARGE_PIECES });
    });

    it('masks the credential echoed URL-encoded (upper and lower hex, + for space) and base64 at every alignment', async () => {
      const response = await call(connector, 'encoded');
      expect(response.status).toBe(200);
      expectNoSecret(connector, response);
      const body = JSON.parse(response.body.toString('utf8'));
      for (const secret of secretsOf(connector)) {
        const component = encodeURIComponent(secret);
        const form = new URLSearchParams({ s: secret }).toString().slice(2);
        for (const encoded of [component, form, component.toLowerCase(), form.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase())]) {
          expect(response.body.includes(Buffer.from(encoded))).toBe(false);
        }
      }
      expect(body.next).toMatch(/^https:\/\/app\.example\/cb\?auth=[^&]*\*{10,}&x=1$/);
      expect(body.form).toMatch(/^auth=[^&]*\*{10,}&x=1$/);
      expect(body.html).toMatch(/^<p>[^*]*\*{10,}<\/p>$/);
      const raw = secretsOf(connector)[0];
      for (const [encoding, texts] of [
        ['base64', body.base64],
        ['base64url', body.base64url],
      ] as const) {
        for (const text of texts as string[]) {
          expect(text).toMatch(/\*{10,}/);
          // What is left cannot be decoded back into the credential (at most a few bits at each end survive).
          expect(Buffer.from(text.replace(/\*/g, 'A'), encoding).toString('latin1')).not.toContain(raw.slice(1, -1));
        }
      }
      expect(await upstreamEvent(connector)).toMatchObject({ status: 200, redacted: expect.any(Number) });
    });

    it('does not forward Range or If-Range with an injected credential: the whole echo comes back, masked', async () => {
      const response = await call(connector, 'range', undefined, { range: 'bytes=10-14', 'if-range': '"v1"' });
      expect(last(connector).headers.range).toBeUndefined();
      expect(last(connector).headers['if-range']).toBeUndefined();
      expect(response.status).toBe(200);
      expectNoSecret(connector, response);
      expect(response.body.toString('utf8')).toBe(`debug: ${masked(connector, last(connector))}\n`);
      expect(await upstreamEvent(connector)).toMatchObject({ status: 200, redacted: 1 });
    });

    it('drops response headers that carry the credential URL-encoded or in base64', async () => {
      const response = await call(connector, 'redirect');
      expect(response.status).toBe(302);
      expect(response.headers.location).toBeUndefined();
      expect(response.headers['x-debug']).toBeUndefined();
      expect(response.headers['x-kept']).toBe('yes');
    });

    it('refuses a part (206) the upstream sent although asked for the whole body', async () => {
      const response = await call(connector, 'partial');
      expect(response.status).toBe(502);
      expectNoSecret(connector, response);
      expect(JSON.parse(response.body.toString('utf8'))).toMatchObject({ error: 'bad_gateway' });
      expect(await upstreamEvent(connector)).toMatchObject({ status: 502, upstream_status: 206, error: 'bad_gateway', reason: 'upstream_partial_content' });
    });

    it('refuses a compressed body the upstream sent although asked for identity', async () => {
      const response = await call(connector, 'gzip');
      expect(response.status).toBe(502);
      expectNoSecret(connector, response);
      expect(response.headers['content-encoding']).toBeUndefined();
      expect(JSON.parse(response.body.toString('utf8'))).toMatchObject({ error: 'bad_gateway' });
      expect(await upstreamEvent(connector)).toMatchObject({
        status: 502,
        upstream_status: 200,
        error: 'bad_gateway',
        reason: 'upstream_content_encoding',
        content_encoding: 'gzip',
      });
    });

    it('refuses a body compressed as a transfer coding (which undici passes on compressed, and the agent can inflate)', async () => {
      const response = await call(connector, 'transfer-gzip');
      expect(response.status).toBe(502);
      expectNoSecret(connector, response);
      expect(JSON.parse(response.body.toString('utf8'))).toMatchObject({ error: 'bad_gateway' });
      expect(await upstreamEvent(connector)).toMatchObject({
        status: 502,
        upstream_status: 200,
        error: 'bad_gateway',
        reason: 'upstream_content_encoding',
        transfer_encoding: 'gzip, chunked',
      });
    });
  });

  it('keeps an event stream flowing while masking what it echoes', async () => {
    let sawFirst = false;
    const response = await call('echo-bearer', 'sse', (soFar) => {
      // The second event is sent only once the first has reached the agent: nothing waits for the end.
      if (!sawFirst && soFar.toString('utf8').includes('{"progress":1}\n\n')) {
        sawFirst = true;
        releaseSse();
      }
    });
    expect(sawFirst).toBe(true);
    expect(response.status).toBe(200);
    expectNoSecret('echo-bearer', response);
    expect(response.body.toString('utf8')).toBe(
      `event: message\ndata: {"progress":1}\n\nevent: message\ndata: {"echo":"Bearer ${'*'.repeat(BEARER_SECRET.length)}"}\n\n`,
    );
    expect(await upstreamEvent('echo-bearer')).toMatchObject({ status: 200, redacted: 1 });
  });

  it('leaves a body without a secret byte for byte, with no redaction recorded', async () => {
    const response = await call('echo-bearer', 'plain');
    expect(response.status).toBe(200);
    expect(response.body.toString('utf8')).toBe(PLAIN_BODY);
    const event = await upstreamEvent('echo-bearer');
    expect(event.status).toBe(200);
    expect(event).not.toHaveProperty('redacted');
  });
});
