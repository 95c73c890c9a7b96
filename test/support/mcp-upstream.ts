import { randomUUID } from 'node:crypto';
import { createServer, IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';

/** One HTTP request as the MCP server received it. */
export interface McpSeenRequest {
  method: string;
  headers: IncomingMessage['headers'];
  /** The JSON-RPC message, for POST. */
  message?: { method?: string; params?: { name?: string; arguments?: Record<string, unknown> } };
}

/** The official MCP SDK server (`McpServer` over Streamable HTTP) on loopback, counting what reaches it. */
export interface McpUpstream {
  /** The MCP endpoint (`http://127.0.0.1:port/mcp`). */
  url: string;
  requests: McpSeenRequest[];
  /** Tool invocations the server actually ran. */
  toolCalls: Array<{ tool: string; args: Record<string, unknown> }>;
  /** Lets the running `slow` tool finish (it reports progress first, then waits for this). */
  releaseSlow(): void;
  close(): Promise<void>;
}

/** The tools: `transfer` (write, constrained), `lookup` (read), `slow` (read, streams progress), `wipe` (write, never granted in the suites). */
function toolServer(toolCalls: McpUpstream['toolCalls'], slowGate: () => Promise<void>): McpServer {
  const server = new McpServer({ name: 'writ-test-tools', version: '1.0.0' });
  server.registerTool('transfer', { description: 'Send money', inputSchema: { to: z.string(), amount: z.number() } }, async (args) => {
    toolCalls.push({ tool: 'transfer', args });
    return { content: [{ type: 'text', text: `sent ${args.amount} to ${args.to}` }] };
  });
  server.registerTool('lookup', { description: 'Look something up', inputSchema: { q: z.string() } }, async (args) => {
    toolCalls.push({ tool: 'lookup', args });
    return { content: [{ type: 'text', text: `found ${args.q}` }] };
  });
  server.registerTool('slow', { description: 'Report progress, then finish when released', inputSchema: { step: z.string() } }, async (args, extra) => {
    toolCalls.push({ tool: 'slow', args });
    await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: extra._meta?.progressToken ?? 0, progress: 1, total: 2 } });
    await slowGate();
    return { content: [{ type: 'text', text: `finished ${args.step}` }] };
  });
  server.registerTool('wipe', { description: 'Delete everything' }, async () => {
    toolCalls.push({ tool: 'wipe', args: {} });
    return { content: [{ type: 'text', text: 'wiped' }] };
  });
  return server;
}

/**
 * Starts an MCP server that requires `Authorization: Bearer <secret>` (the connector's
 * credential) on every request. `json: true` answers POSTs with JSON instead of SSE.
 */
export async function startMcpUpstream(secret: string, options: { json?: boolean } = {}): Promise<McpUpstream> {
  const requests: McpSeenRequest[] = [];
  const toolCalls: McpUpstream['toolCalls'] = [];
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  let release: () => void = () => undefined;
  let gate = new Promise<void>((resolve) => (release = resolve));
  const slowGate = () => gate;
  const http: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      void (async () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const message = text ? (JSON.parse(text) as McpSeenRequest['message']) : undefined;
        requests.push({ method: req.method ?? '', headers: req.headers, message });
        if (req.headers.authorization !== `Bearer ${secret}`) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"unauthorized"}');
          return;
        }
        const sessionId = req.headers['mcp-session-id'];
        let transport = typeof sessionId === 'string' ? sessions.get(sessionId) : undefined;
        if (!transport && req.method === 'POST' && isInitializeRequest(message)) {
          const created = new StreamableHTTPServerTransport({
            sessionIdGenerator: () => randomUUID(),
            enableJsonResponse: options.json ?? false,
            onsessioninitialized: (id) => void sessions.set(id, created),
          });
          await toolServer(toolCalls, slowGate).connect(created);
          transport = created;
        }
        if (!transport) {
          res.writeHead(400, { 'content-type': 'application/json' }).end('{"jsonrpc":"2.0","error":{"code":-32000,"message":"no session"},"id":null}');
          return;
        }
        await transport.handleRequest(req, res, message);
      })().catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(error));
      });
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    requests,
    toolCalls,
    releaseSlow: () => {
      release();
      gate = new Promise<void>((resolve) => (release = resolve));
    },
    close: async () => {
      release();
      for (const transport of sessions.values()) await transport.close().catch(() => undefined);
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
