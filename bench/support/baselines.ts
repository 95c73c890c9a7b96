import { randomUUID } from 'node:crypto';
import { Agent, createServer, IncomingMessage, request as httpRequest, Server, ServerResponse } from 'node:http';
import { createLocalJWKSet, generateKeyPair, JWK, jwtVerify, SignJWT } from 'jose';
import type { Pool } from 'pg';

/** Listens on a loopback port and resolves once listening. */
function listen(server: Server, port: number): Promise<Server> {
  server.keepAliveTimeout = 30_000;
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function json(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  response.end(text);
}

/**
 * The minimal-exchange baseline: what any token exchange must do, and nothing else. The same
 * signature checks (the agent's ES256 client assertion, the task token against the issuer's
 * JWKS) and an ES256 signature of the issued token, a trivial policy (the requested
 * connector is named), and one durable insert (an autocommit INSERT, one WAL flush). No
 * framework, no audit chain, no replay table, no logging. Writ's exchange is measured
 * against it in the same run: their ratio is the price of everything Writ adds.
 */
export async function startMinimalExchange(
  port: number,
  options: { pool: Pool; issuer: string; issuerJwks: { keys: JWK[] }; agentJwks: { keys: JWK[] } },
): Promise<Server> {
  await options.pool.query(
    `CREATE TABLE IF NOT EXISTS bench_minimal_grants (id uuid PRIMARY KEY, task_id text NOT NULL, agent_id text NOT NULL, details jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
  );
  const issuerKeys = createLocalJWKSet(options.issuerJwks);
  const agentKeys = createLocalJWKSet(options.agentJwks);
  const { privateKey } = await generateKeyPair('ES256');
  const kid = 'bench-minimal';
  const audience = `${options.issuer}/oauth2/token`;
  const handle = async (request: IncomingMessage, response: ServerResponse): Promise<void> => {
    const form = new URLSearchParams(await readBody(request));
    // jwtVerify refuses a wrong audience, an expired assertion or a bad signature (caught below: 400).
    const assertion = await jwtVerify(form.get('client_assertion') ?? '', agentKeys, { algorithms: ['ES256'], audience: [options.issuer, audience] });
    const subject = await jwtVerify(form.get('subject_token') ?? '', issuerKeys, { issuer: options.issuer, algorithms: ['ES256'] });
    const details = JSON.parse(form.get('authorization_details') ?? '[]') as Array<{ connector?: string }>;
    // The trivial policy.
    if (!Array.isArray(details) || details.length === 0 || !details.every((detail) => typeof detail.connector === 'string')) {
      json(response, 400, { error: 'invalid_authorization_details' });
      return;
    }
    const id = randomUUID();
    await options.pool.query(`INSERT INTO bench_minimal_grants (id, task_id, agent_id, details) VALUES ($1, $2, $3, $4)`, [
      id,
      String(subject.payload.sub),
      String(assertion.payload.iss),
      JSON.stringify(details),
    ]);
    const token = await new SignJWT({ authorization_details: details, task: subject.payload.sub })
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
      .setIssuer(options.issuer)
      .setSubject(String(assertion.payload.iss))
      .setJti(id)
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
    json(response, 200, { access_token: token, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', token_type: 'Bearer', expires_in: 300 });
  };
  const server = createServer((request, response) => {
    handle(request, response).catch(() => json(response, 400, { error: 'invalid_request' }));
  });
  return listen(server, port);
}

/**
 * The plain-proxy baseline: a reverse proxy in about twenty lines of Node, forwarding every
 * request to the same upstream with a keep-alive agent and its own upstream credential.
 */
export function startPlainProxy(port: number, upstreamUrl: string, upstreamAuthorization: string): Promise<Server> {
  const upstream = new URL(upstreamUrl);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').replace(/^\/connectors\/[^/]+/, '');
    const forward = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        path,
        method: request.method,
        agent,
        headers: { ...request.headers, host: upstream.host, authorization: upstreamAuthorization },
      },
      (upstreamResponse) => {
        response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.headers);
        upstreamResponse.pipe(response);
      },
    );
    forward.on('error', () => {
      if (!response.headersSent) response.writeHead(502);
      response.end();
    });
    request.pipe(forward);
  });
  return listen(server, port);
}
