// Starts a real Writ for the Python SDK's tests and prints where it is, as one JSON line on stdout:
// `npm start`'s launcher (all three services, embedded PostgreSQL in a throwaway data dir, random
// ports), a mock payments upstream, and, seeded through the admin API, the payments connector, an
// agent and an orchestrator (their private JWKs are printed for the tests) and policy data that
// sends payouts above 1 000.00 USD to a human. Runs until stdin closes or SIGTERM, then cleans up.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { exportJWK, generateKeyPair, calculateJwkThumbprint } from 'jose';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const log = (line) => process.stderr.write(`writ_server: ${line}\n`);
const SECRET = `sk_test_${randomBytes(12).toString('hex')}`;

/** The payments API: demands its own bearer secret; `GET /_received` (open) lists what it received. */
function startUpstream() {
  const received = [];
  const payouts = new Map();
  const server = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const send = (status, body) => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(body));
      };
      if (request.url === '/_received') return send(200, received);
      received.push({ method: request.method, url: request.url, authorization: request.headers.authorization ?? null, dpop: request.headers.dpop ?? null });
      if (request.headers.authorization !== `Bearer ${SECRET}`) return send(401, { error: 'bad credential' });
      if (request.method === 'POST' && request.url === '/v1/payouts') {
        const payout = { id: `po_${randomBytes(4).toString('hex')}`, status: 'paid', ...JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') };
        payouts.set(payout.id, payout);
        return send(201, payout);
      }
      const match = /^\/v1\/payouts\/([a-z0-9_]+)$/.exec(request.url ?? '');
      if (request.method === 'GET' && match && payouts.has(match[1])) return send(200, payouts.get(match[1]));
      return send(404, { error: 'not found' });
    });
  });
  return new Promise((resolveUpstream) => server.listen(0, '127.0.0.1', () => resolveUpstream({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

/**
 * The official MCP SDK server over Streamable HTTP at `/mcp`, with the tools `transfer` and
 * `lookup` (and `wipe`, which no test task allows); it demands the connector's bearer secret. `GET /_received` (open) lists the
 * authorization headers and tool calls it received.
 */
function startMcpUpstream() {
  const received = [];
  const sessions = new Map();
  const tools = () => {
    const server = new McpServer({ name: 'python-test-tools', version: '1.0.0' });
    server.registerTool('transfer', { inputSchema: { to: z.string(), amount: z.number() } }, async ({ to, amount }) => ({
      content: [{ type: 'text', text: `sent ${amount} to ${to}` }],
    }));
    server.registerTool('lookup', { inputSchema: { q: z.string() } }, async ({ q }) => ({ content: [{ type: 'text', text: `found ${q}` }] }));
    server.registerTool('wipe', {}, async () => ({ content: [{ type: 'text', text: 'wiped' }] }));
    return server;
  };
  const server = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', async () => {
      if (request.url === '/_received') {
        response.writeHead(200, { 'content-type': 'application/json' });
        return response.end(JSON.stringify(received));
      }
      const text = Buffer.concat(chunks).toString('utf8');
      const message = text ? JSON.parse(text) : undefined;
      received.push({ method: request.method, authorization: request.headers.authorization ?? null, dpop: request.headers.dpop ?? null, rpc: message?.method ?? null, tool: message?.params?.name ?? null });
      if (request.headers.authorization !== `Bearer ${SECRET}`) {
        response.writeHead(401).end();
        return;
      }
      let transport = sessions.get(request.headers['mcp-session-id']);
      if (!transport && request.method === 'POST' && isInitializeRequest(message)) {
        transport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), onsessioninitialized: (id) => sessions.set(id, transport) });
        await tools().connect(transport);
      }
      if (!transport) {
        response.writeHead(400).end();
        return;
      }
      await transport.handleRequest(request, response, message);
    });
  });
  return new Promise((resolveUpstream) => server.listen(0, '127.0.0.1', () => resolveUpstream({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

async function clientKey() {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return { privateJwk: { ...(await exportJWK(privateKey)), kid, alg: 'ES256' }, publicJwk: { ...publicJwk, kid, alg: 'ES256', use: 'sig' } };
}

async function main() {
  const build = spawnSync(process.execPath, [join(root, 'scripts/build.js'), '--if-needed'], { cwd: root, stdio: ['ignore', 2, 2] });
  if (build.status !== 0) throw new Error('the build failed');
  const upstream = await startUpstream();
  const mcpUpstream = await startMcpUpstream();
  // Ports below the ephemeral range, as the jest suites take them (a port from listen(0) could be
  // handed to the embedded PostgreSQL, just freed, before Writ listens on it); three distinct ones.
  const { freePorts } = await import(pathToFileURL(join(root, 'dist/libs/testing/src/free-port.js')).href);
  const [authPort, gatewayPort, adminPort] = await freePorts(3);
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-python-sdk-'));
  const adminToken = `writ_admin_${randomBytes(24).toString('base64url')}`;
  const issuer = `http://127.0.0.1:${authPort}`;
  const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  const writ = spawn(process.execPath, [join(root, 'dist/apps/launcher/src/main.js')], {
    cwd: root,
    stdio: ['ignore', 2, 2],
    env: {
      ...process.env,
      WRIT_DATA_DIR: dataDir,
      WRIT_DATABASE_URL: '',
      WRIT_MASTER_KEY: randomBytes(32).toString('base64'),
      WRIT_ADMIN_TOKEN: adminToken,
      WRIT_ISSUER: issuer,
      WRIT_GATEWAY_URL: gatewayUrl,
      WRIT_AUTH_PORT: String(authPort),
      WRIT_GATEWAY_PORT: String(gatewayPort),
      WRIT_ADMIN_PORT: String(adminPort),
      WRIT_LOG_LEVEL: process.env.WRIT_LOG_LEVEL ?? 'warn',
      WRIT_UPSTREAM_ALLOWED_NETWORKS: '127.0.0.0/8',
    },
  });
  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    writ.kill('SIGTERM');
    await new Promise((done) => (writ.exitCode !== null ? done() : writ.once('exit', done)));
    upstream.server.close();
    mcpUpstream.server.closeAllConnections();
    mcpUpstream.server.close();
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(code);
  };
  writ.once('exit', (code) => {
    if (!stopping) {
      log(`Writ exited (${code})`);
      stopping = true;
      upstream.server.close();
      rmSync(dataDir, { recursive: true, force: true });
      process.exit(1);
    }
  });
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
  process.stdin.on('end', () => stop(0));
  process.stdin.resume();

  const deadline = Date.now() + 120_000;
  for (;;) {
    const ready = await fetch(`${adminUrl}/health/ready`).then((response) => response.ok, () => false);
    const auth = await fetch(`${issuer}/health/ready`).then((response) => response.ok, () => false);
    if (ready && auth) break;
    if (Date.now() > deadline) throw new Error('Writ did not become ready');
    await new Promise((done) => setTimeout(done, 250));
  }
  const admin = async (method, path, body) => {
    const response = await fetch(`${adminUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
    return response.status === 204 ? undefined : response.json();
  };
  const run = randomUUID().slice(0, 8);
  const agentKey = await clientKey();
  const orchestratorKey = await clientKey();
  const agentId = `py-agent-${run}`;
  const orchestratorId = `py-orchestrator-${run}`;
  await admin('POST', '/v1/connectors', {
    id: 'payments',
    name: 'Payments',
    base_url: upstream.url,
    credential: { type: 'bearer', token: SECRET },
    operations: [
      {
        name: 'payouts.create', method: 'POST', path: '/v1/payouts', risk: 'write',
        constraints: {
          destination: { in: 'body', field: 'destination', op: 'eq' },
          amount_max: { in: 'body', field: 'amount', op: 'lte' },
          currency: { in: 'body', field: 'currency', op: 'eq' },
        },
      },
      { name: 'payouts.get', method: 'GET', path: '/v1/payouts/{payout_id}', risk: 'read', constraints: {} },
    ],
  });
  await admin('POST', '/v1/connectors', {
    id: 'tools',
    kind: 'mcp',
    name: 'MCP tools',
    base_url: `${mcpUpstream.url}/mcp`,
    credential: { type: 'bearer', token: SECRET },
    operations: [
      { name: 'transfer', risk: 'write', constraints: { to: { in: 'arguments', field: 'to', op: 'eq' }, amount_max: { in: 'arguments', field: 'amount', op: 'lte' } } },
      { name: 'lookup', risk: 'read' },
      { name: 'wipe', risk: 'write' },
    ],
  });
  await admin('POST', '/v1/agents', { id: agentId, name: 'Python agent', jwks: { keys: [agentKey.publicJwk] } });
  await admin('POST', '/v1/orchestrators', { id: orchestratorId, name: 'Python orchestrator', jwks: { keys: [orchestratorKey.publicJwk] }, allowed_agents: [agentId] });
  const data = JSON.parse(readFileSync(join(root, 'policies/writ/data.json'), 'utf8'));
  data.writ.config.approval = { payments: { constraint: 'amount_max', above: 100000, actions: ['payouts.create'] } };
  await admin('PUT', '/v1/policies/data', { data });
  await new Promise((done) => setTimeout(done, 2_500)); // every instance installs policy data within 2 s

  process.stdout.write(`${JSON.stringify({
    issuer,
    gateway_url: gatewayUrl,
    admin_url: adminUrl,
    admin_token: adminToken,
    upstream_url: upstream.url,
    upstream_secret: SECRET,
    mcp_upstream_url: mcpUpstream.url,
    agent: { id: agentId, jwk: agentKey.privateJwk },
    orchestrator: { id: orchestratorId, jwk: orchestratorKey.privateJwk },
  })}\n`);
}

main().catch((error) => {
  log(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
