import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import { exportJWK, generateKeyPair } from 'jose';
import { Agent } from './agent.js';
import { WritResponseError } from './errors.js';
import { Orchestrator } from './orchestrator.js';
import { MAX_ANSWER_BYTES } from './client.js';

/**
 * A broken or hostile authorization server, and many callers at once: an answer without end must
 * not fill the agent's memory, and a credential the gateway refuses to N concurrent calls is
 * replaced by one exchange, not N.
 */
const ISSUER = 'https://writ.example';
const GATEWAY = 'https://gw.example';
const READ = { connector: 'payments', action: 'payouts.get' };

async function privateJwk() {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: 'k1' };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Writ whose token endpoint issues `<prefix>-1`, `<prefix>-2`… (slowly, so that concurrent callers
 * overlap an exchange) and whose gateway and Tasks API refuse the first token with the gateway's
 * own `invalid_token` challenge and accept every later one.
 */
function refusingFirstToken(prefix: string) {
  let issued = 0;
  const exchanges: string[] = [];
  const fetchImpl = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
    if (url.pathname === '/.well-known/oauth-authorization-server') {
      return Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` });
    }
    if (url.pathname === '/oauth2/token') {
      const token = `${prefix}-${++issued}`;
      exchanges.push(token);
      await pause(50);
      return Response.json({ access_token: token, token_type: 'Bearer', expires_in: 120 });
    }
    const authorization = new Headers(init?.headers).get('authorization') ?? '';
    await pause(10);
    if (authorization.endsWith(`${prefix}-1`)) {
      return new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token", error_description="spent"' } });
    }
    return Response.json({ ok: true });
  };
  return { fetch: fetchImpl, exchanges };
}

describe('a credential the gateway refuses to concurrent calls', () => {
  it('is replaced for each of them: concurrent identical one-use writes all go through', async () => {
    // Writes are one-use by default: the credential the four calls shared serves one of them only.
    let issued = 0;
    const used = new Set<string>();
    const fetchImpl = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      if (url.pathname === '/.well-known/oauth-authorization-server') return Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` });
      if (url.pathname === '/oauth2/token') {
        await pause(30);
        return Response.json({ access_token: `at-${++issued}`, token_type: 'Bearer', expires_in: 120 });
      }
      const token = new Headers(init?.headers).get('authorization') ?? '';
      await pause(10);
      if (used.has(token)) {
        return new Response(null, {
          status: 401,
          headers: { 'www-authenticate': 'Bearer error="invalid_token", error_description="the use budget of this credential is spent"' },
        });
      }
      used.add(token);
      return Response.json({ ok: true });
    };
    const agent = new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: fetchImpl, dpop: false });
    const write = { connector: 'payments', action: 'payouts.create', constraints: { destination: 'acct_1' } };
    const answers = await Promise.all([1, 2, 3, 4].map(() => agent.fetch('task-token', write, '/v1/payouts', { json: { destination: 'acct_1' } })));
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200, 200]);
  });

  it("is the orchestrator's Tasks API token too: one client credentials request replaces it", async () => {
    const fresh = refusingFirstToken('fresh');
    const concurrent = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: fresh.fetch });
    const tasks = await Promise.all([1, 2, 3, 4].map((n) => concurrent.tasks.get(`t${n}`)));
    expect(tasks).toHaveLength(4);
    expect(fresh.exchanges).toEqual(['fresh-1', 'fresh-2']);
  });
});

describe("the orchestrator's Tasks API token", () => {
  it('is asked for once by concurrent calls, which share its failure (as in the Python SDK)', async () => {
    let tokens = 0;
    const fetchImpl = async (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      if (url.pathname === '/.well-known/oauth-authorization-server') return Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` });
      tokens += 1;
      await pause(50);
      return Response.json({ error: 'invalid_client', error_description: 'unknown key' }, { status: 401 });
    };
    const orchestrator = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: fetchImpl });
    const outcomes = await Promise.allSettled([1, 2, 3, 4].map((n) => orchestrator.tasks.get(`t${n}`)));
    expect(outcomes.map((outcome) => outcome.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
    expect(tokens).toBe(1);
  });
});

describe('an answer from the authorization server without end', () => {
  let server: Server;
  let issuer: string;

  beforeAll(async () => {
    // Discovery is fine; the token endpoint and the Tasks API stream a JSON string for ever.
    server = createServer((request, response) => {
      if (request.url === '/.well-known/oauth-authorization-server') {
        response.setHeader('content-type', 'application/json');
        response.end(JSON.stringify({ issuer, token_endpoint: `${issuer}/oauth2/token` }));
        return;
      }
      let form = '';
      request.on('data', (data: Buffer) => (form += data.toString()));
      request.on('end', () => {
        if (form.includes('grant_type=client_credentials')) {
          response.setHeader('content-type', 'application/json');
          response.end(JSON.stringify({ access_token: 'tasks-1', token_type: 'Bearer', expires_in: 120 }));
          return;
        }
        response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        response.write('{"access_token":"');
        const chunk = 'x'.repeat(64 * 1024);
        const more = () => {
          while (!response.destroyed && response.write(chunk)) continue;
          if (!response.destroyed) response.once('drain', more);
        };
        more();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('is cut off after MAX_ANSWER_BYTES at the token endpoint, with a WritResponseError', async () => {
    const agent = new Agent({
      issuer,
      gatewayUrl: GATEWAY,
      clientId: 'agent-1',
      key: await privateJwk(),
      dpop: false,
      allowInsecureRequests: true,
      timeoutMs: 20_000,
    });
    const started = Date.now();
    const error = await agent.credential('task-token', READ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WritResponseError);
    expect((error as Error).message).toContain(`${MAX_ANSWER_BYTES} bytes`);
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 30_000);

  it('is cut off after MAX_ANSWER_BYTES at the Tasks API, with a WritResponseError', async () => {
    const orchestrator = new Orchestrator({ issuer, clientId: 'orch-1', key: await privateJwk(), allowInsecureRequests: true, timeoutMs: 20_000 });
    const error = await orchestrator.tasks.get('t1').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WritResponseError);
    expect((error as Error).message).toContain(`${MAX_ANSWER_BYTES} bytes`);
  }, 30_000);
});

describe('discovery', () => {
  /** A Writ whose discovery answers `answer` (then nothing else is scripted). */
  const discovering = (answer: () => Response) => {
    const seen: string[] = [];
    const fetchImpl = (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      seen.push(url.pathname);
      return Promise.resolve(answer());
    };
    return { fetch: fetchImpl, seen };
  };

  it.each([
    ['another issuer (RFC 8414 §3.3)', () => Response.json({ issuer: 'https://attacker.example', token_endpoint: 'https://attacker.example/token' }), 'issuer'],
    ['a token endpoint that is not https', () => Response.json({ issuer: ISSUER, token_endpoint: 'http://writ.example/oauth2/token' }), 'https'],
    ['a 404', () => new Response('not here', { status: 404 }), '404'],
    ['a 503 asking for an hour', () => Response.json({ error: 'temporarily_unavailable' }, { status: 503, headers: { 'retry-after': '3600' } }), '503'],
    ['a redirect', () => new Response(null, { status: 302, headers: { location: 'https://attacker.example/.well-known/oauth-authorization-server' } }), '302'],
  ])('refuses %s with discovery_failed, naming why, before the task token is sent', async (_case, answer, why) => {
    const server = discovering(answer);
    const agent = new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: server.fetch, dpop: false });
    const error = await agent.credential('task-token', READ).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'discovery_failed' });
    expect((error as Error).message).toContain(why);
    expect(server.seen).toEqual(['/.well-known/oauth-authorization-server']);
  });

  it('asks for the metadata of an issuer with a path at the RFC 8414 §3.1 location, as the Python SDK does', async () => {
    const issuer = 'https://writ.example/tenant-a';
    const server = discovering(() => Response.json({ issuer, token_endpoint: `${issuer}/oauth2/token` }));
    const agent = new Agent({ issuer, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: server.fetch, dpop: false });
    await agent.credential('task-token', READ).catch(() => undefined);
    expect(server.seen[0]).toBe('/.well-known/oauth-authorization-server/tenant-a');
  });
});

describe('a token endpoint that downgrades a DPoP-bound request', () => {
  it.each([
    ['a bearer token', { access_token: 'at-secret-value', token_type: 'Bearer', expires_in: 120 }],
    ['no token_type', { access_token: 'at-secret-value', expires_in: 120 }],
  ])('is refused when it answers %s, and the token is never sent to the gateway nor shown', async (_case, answer) => {
    const seen: string[] = [];
    const fetchImpl = (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      seen.push(url.href);
      if (url.pathname === '/.well-known/oauth-authorization-server')
        return Promise.resolve(Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }));
      return Promise.resolve(Response.json(answer, { headers: { 'cache-control': 'no-store' } }));
    };
    const agent = new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: fetchImpl });
    const error = await agent.fetch('task-token', READ, '/v1/payouts/po_1').catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'unexpected_response' });
    expect(JSON.stringify(error)).not.toContain('at-secret-value');
    expect(inspect(error, { depth: 10 })).not.toContain('at-secret-value'); // what console.log(error) prints, causes included
    expect(seen.filter((href) => href.startsWith(GATEWAY))).toEqual([]);
  });
});

describe('a credential close to its expiry', () => {
  it('is refreshed once for concurrent callers, not once each', async () => {
    let issued = 0;
    const fetchImpl = async (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      if (url.pathname === '/.well-known/oauth-authorization-server') return Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` });
      await pause(30);
      return Response.json({ access_token: `at-${++issued}`, token_type: 'Bearer', expires_in: 1.5 });
    };
    const agent = new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: fetchImpl, dpop: false });
    expect((await agent.credential('task-token', READ)).accessToken).toBe('at-1');
    await pause(600); // past its refresh point (1 s before it expires), still valid
    const renewed = await Promise.all([1, 2, 3, 4].map(() => agent.credential('task-token', READ)));
    expect(renewed.map((credential) => credential.accessToken)).toEqual(['at-2', 'at-2', 'at-2', 'at-2']);
    expect(issued).toBe(2);
  });
});

describe('a Tasks API answer that is not JSON', () => {
  it('is a WritResponseError (unexpected_response), as in the Python SDK, not an OAuth error', async () => {
    const fetchImpl = (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      if (url.pathname === '/.well-known/oauth-authorization-server')
        return Promise.resolve(Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }));
      if (url.pathname === '/oauth2/token') return Promise.resolve(Response.json({ access_token: 'tasks-1', token_type: 'Bearer', expires_in: 120 }));
      return Promise.resolve(new Response('<html>a proxy page</html>', { status: 200, headers: { 'content-type': 'text/html' } }));
    };
    const orchestrator = new Orchestrator({ issuer: ISSUER, clientId: 'orch-1', key: await privateJwk(), fetch: fetchImpl });
    const error = await orchestrator.tasks.get('t1').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WritResponseError);
    expect(error).toMatchObject({ code: 'unexpected_response', status: 200 });
  });
});

describe('an expires_in given as a numeric string', () => {
  it.each([
    ['"60"', 60],
    ['"90.5"', 90.5],
  ])('is read as a number of seconds, as in the Python SDK (%s)', async (expiresIn, seconds) => {
    const fetchImpl = (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      if (url.pathname === '/.well-known/oauth-authorization-server')
        return Promise.resolve(Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }));
      const text = `{"access_token":"at-1","token_type":"Bearer","expires_in":${expiresIn}}`;
      return Promise.resolve(new Response(text, { headers: { 'content-type': 'application/json' } }));
    };
    const agent = new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: fetchImpl, dpop: false });
    const lifetime = ((await agent.credential('task-token', READ)).expiresAt - Date.now()) / 1000;
    expect(lifetime).toBeGreaterThan(seconds - 2);
    expect(lifetime).toBeLessThanOrEqual(seconds);
  });
});

describe('a malformed token answer', () => {
  it.each([
    ['no access_token', '{"token_type":"Bearer"}'],
    ['an unsupported token_type', '{"access_token":"at-1","token_type":"mac"}'],
    ['not an object', '[]'],
  ])('with %s is a WritResponseError carrying the answer status, as in the Python SDK', async (_case, text) => {
    const fetchImpl = (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      if (url.pathname === '/.well-known/oauth-authorization-server')
        return Promise.resolve(Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }));
      return Promise.resolve(new Response(text, { headers: { 'content-type': 'application/json' } }));
    };
    const agent = new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: await privateJwk(), fetch: fetchImpl, dpop: false });
    const error = await agent.credential('task-token', READ).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(WritResponseError);
    expect(error).toMatchObject({ code: 'unexpected_response', status: 200 });
  });
});

describe('a client key without an asymmetric alg', () => {
  it.each(['none', 'HS256', 'ES999'])('(%s) is refused with invalid_key before any assertion is sent, as in the Python SDK', async (alg) => {
    const seen: string[] = [];
    const fetchImpl = (input: string | URL | Request): Promise<Response> => {
      const url = new URL(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      seen.push(url.pathname);
      return Promise.resolve(Response.json({ issuer: ISSUER, token_endpoint: `${ISSUER}/oauth2/token` }));
    };
    const agent = new Agent({ issuer: ISSUER, gatewayUrl: GATEWAY, clientId: 'agent-1', key: { ...(await privateJwk()), alg }, fetch: fetchImpl, dpop: false });
    await expect(agent.credential('task-token', READ)).rejects.toMatchObject({ code: 'invalid_key' });
    expect(seen).not.toContain('/oauth2/token');
  });
});
