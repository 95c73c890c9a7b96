import { randomBytes } from 'node:crypto';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';

/** A request as a mock upstream received it. */
export interface ReceivedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  /** The headers as sent, name and value alternating (repeats and cases kept). */
  rawHeaders: string[];
  body: Buffer;
}

/** A small upstream API for tests: demands its own credential and records what it receives. */
export interface MockUpstream {
  url: string;
  received: ReceivedRequest[];
  close(): Promise<void>;
}

type Route = (request: ReceivedRequest, response: ServerResponse) => void | Promise<void>;

function json(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  response.writeHead(status, { 'content-type': 'application/json', ...headers });
  response.end(JSON.stringify(body));
}

/** Starts an upstream on a free loopback port; `authorized` decides on each request's headers. */
export async function startMockUpstream(authorized: (headers: IncomingMessage['headers']) => boolean, routes: Record<string, Route>): Promise<MockUpstream> {
  const received: ReceivedRequest[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on(
      'end',
      () =>
        void (async () => {
          const entry: ReceivedRequest = {
            method: request.method ?? '',
            url: request.url ?? '',
            headers: request.headers,
            rawHeaders: request.rawHeaders,
            body: Buffer.concat(chunks),
          };
          received.push(entry);
          if (!authorized(request.headers)) return json(response, 401, { error: 'bad credential' });
          const path = entry.url.split('?')[0];
          for (const [pattern, route] of Object.entries(routes)) {
            const [method, regex] = pattern.split(' ');
            if (method === entry.method && new RegExp(`^${regex}$`).test(path)) return route(entry, response);
          }
          json(response, 404, { error: 'not found' });
        })(),
    );
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The payments API: `Authorization: Bearer <secret>`; payouts, a redirect and a slow endpoint. */
export function startPaymentsUpstream(secret: string, redirectTo = 'http://127.0.0.1:9/'): Promise<MockUpstream> {
  const payouts = new Map<string, unknown>();
  return startMockUpstream((headers) => headers.authorization === `Bearer ${secret}`, {
    'POST /v1/payouts': (request, response) => {
      const id = `po_${randomBytes(4).toString('hex')}`;
      const payout = { id, status: 'paid', ...JSON.parse(request.body.toString('utf8') || '{}') };
      payouts.set(id, payout);
      json(response, 201, payout, { 'set-cookie': 'upstream_session=1', 'x-upstream': 'payments' });
    },
    'GET /v1/payouts/[a-z0-9_]+': (request, response) => {
      const payout = payouts.get(request.url.split('?')[0].split('/').pop()!);
      return payout ? json(response, 200, payout) : json(response, 404, { error: 'no such payout' });
    },
    'GET /v1/balance': (_request, response) => json(response, 200, { available: 1_000_000, currency: 'usd' }),
    'GET /v1/moved': (_request, response) => {
      response.writeHead(302, { location: redirectTo });
      response.end();
    },
    'GET /v1/slow': (_request, response) => {
      setTimeout(() => json(response, 200, { slow: true }), 2_000).unref();
    },
  });
}

/** A code-hosting API: a static secret in `PRIVATE-TOKEN` (a `header` credential). */
export function startCodeHostUpstream(secret: string): Promise<MockUpstream> {
  return startMockUpstream((headers) => headers['private-token'] === secret, {
    'GET /repos/[^/]+/[^/]+/issues': (request, response) => json(response, 200, [{ number: 1, title: 'first', path: request.url }]),
  });
}

/** A chat API behind its own OAuth token endpoint (`oauth2_client_credentials`). */
export interface ChatUpstream extends MockUpstream {
  /** Token requests the endpoint answered. */
  tokenRequests: number;
  /** Invalidates every token it issued (the next API call gets a 401). */
  revokeTokens(): void;
}

/** Starts the chat API; its token endpoint is `POST /oauth/token` with HTTP Basic client auth. */
export async function startChatUpstream(clientId: string, clientSecret: string): Promise<ChatUpstream> {
  let valid = new Set<string>();
  const state = { tokenRequests: 0 };
  const basic = `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`;
  const upstream = await startMockUpstream(
    (headers) => {
      if (headers.authorization === basic) return true;
      return typeof headers.authorization === 'string' && valid.has(headers.authorization.replace(/^Bearer /, ''));
    },
    {
      'POST /oauth/token': (request, response) => {
        if (request.headers.authorization !== basic) return json(response, 401, { error: 'invalid_client' });
        state.tokenRequests += 1;
        const token = `chat_at_${randomBytes(8).toString('hex')}`;
        valid.add(token);
        json(response, 200, { access_token: token, token_type: 'Bearer', expires_in: 3600 });
      },
      'POST /api/messages': (request, response) => json(response, 200, { ok: true, echo: JSON.parse(request.body.toString('utf8')) }),
    },
  );
  return {
    ...upstream,
    get tokenRequests() {
      return state.tokenRequests;
    },
    revokeTokens: () => {
      valid = new Set();
    },
  };
}
