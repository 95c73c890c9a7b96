import { createServer, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Agent, Orchestrator } from '@writ/sdk';
import { Client as PgClient } from 'pg';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { seedWorld, World } from './support/grant-flow';
import { McpUpstream, startMcpUpstream } from './support/mcp-upstream';
import { sendJson } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

const SECRET = 'mcp_upstream_secret_7f3a';

const TOOLS = [
  {
    name: 'transfer',
    risk: 'write',
    constraints: { to: { in: 'arguments', field: 'to', op: 'eq' }, amount_max: { in: 'arguments', field: 'amount', op: 'lte' } },
  },
  { name: 'lookup', risk: 'read' },
  { name: 'slow', risk: 'read' },
  { name: 'wipe', risk: 'write' },
];

/**
 * The official MCP TypeScript SDK client (`Client` + `StreamableHTTPClientTransport`) against
 * the official MCP SDK server (`McpServer` + `StreamableHTTPServerTransport`) through the
 * gateway: a tool call is an operation, its arguments are constrained, tool lists are cut to
 * what the task allows, and the server only ever sees the connector's credential.
 */
describe('MCP through the gateway', () => {
  let services: TestServices;
  let world: World;
  let sse: McpUpstream;
  let json: McpUpstream;
  let orchestrator: Orchestrator;
  const clients: Client[] = [];

  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);
  const agentOf = (dpop = true) =>
    new Agent({
      issuer: services.issuer,
      gatewayUrl: services.gatewayUrl,
      clientId: world.agent.id,
      key: { privateKey: world.agent.key.privateKey, kid: world.agent.key.publicJwk.kid },
      allowInsecureRequests: true,
      dpop,
    });
  const task = (connector = 'tools') =>
    orchestrator.tasks.create({
      agentId: world.agent.id,
      purpose: 'pay acct_1 at most 100 and look things up',
      allowed: [
        { connector, actions: ['transfer'], constraints: { to: 'acct_1', amount_max: 100 } },
        { connector, actions: ['lookup', 'slow'] },
      ],
      ttlSeconds: 600,
    });
  /** An MCP client whose every request carries this one credential (Bearer), as a client holding a single token would. */
  const fixedClient = async (connector: string, token: string): Promise<Client> => {
    const transport = new StreamableHTTPClientTransport(new URL(`${services.gatewayUrl}/connectors/${connector}`), {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
    });
    const client = new Client({ name: 'fixed-credential-agent', version: '1.0.0' });
    await client.connect(transport);
    clients.push(client);
    return client;
  };
  const toolCallsSeen = (upstream: McpUpstream) => upstream.requests.filter((request) => request.message?.method === 'tools/call');

  beforeAll(async () => {
    sse = await startMcpUpstream(SECRET);
    json = await startMcpUpstream(SECRET, { json: true });
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    for (const [id, upstream] of [
      ['tools', sse],
      ['tools-json', json],
    ] as const) {
      const created = await admin('POST', '/v1/connectors', {
        id,
        kind: 'mcp',
        name: `MCP ${id}`,
        base_url: upstream.url,
        operations: TOOLS,
        credential: { type: 'bearer', token: SECRET },
      });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ id, kind: 'mcp' });
    }
    orchestrator = new Orchestrator({
      issuer: services.issuer,
      clientId: world.orchestrator.id,
      key: { privateKey: world.orchestrator.key.privateKey, kid: world.orchestrator.key.publicJwk.kid },
      allowInsecureRequests: true,
    });
  });
  afterAll(async () => {
    for (const client of clients) await client.close().catch(() => undefined);
    await services.close();
    await sse.close();
    await json.close();
  });

  it('runs a permitted tool call through the SDK, DPoP-bound, one credential per tool, with the tool list cut to the task', async () => {
    const { taskToken } = await task();
    const agent = agentOf();
    const transport = new StreamableHTTPClientTransport(new URL(agent.mcpUrl('tools')), {
      fetch: agent.mcpFetch(taskToken, {
        connector: 'tools',
        session: { action: 'lookup' },
        constraints: (tool, args) => (tool === 'transfer' ? { to: args.to, amount_max: args.amount } : undefined),
      }),
    });
    const client = new Client({ name: 'writ-agent', version: '1.0.0' });
    await client.connect(transport);
    clients.push(client);
    expect(transport.sessionId).toEqual(expect.any(String));

    const listed = await client.listTools();
    expect(listed.tools.map((tool) => tool.name).sort()).toEqual(['lookup', 'slow', 'transfer']);

    const before = sse.toolCalls.length;
    const result = await client.callTool({ name: 'transfer', arguments: { to: 'acct_1', amount: 42 } });
    expect(result.content).toEqual([{ type: 'text', text: 'sent 42 to acct_1' }]);
    expect(sse.toolCalls.slice(before)).toEqual([{ tool: 'transfer', args: { to: 'acct_1', amount: 42 } }]);

    // The session id went both ways; the server saw only the connector's credential, never the agent's token or proof.
    const seen = sse.requests.slice(-3);
    expect(seen.every((request) => request.headers['mcp-session-id'] === transport.sessionId)).toBe(true);
    for (const request of sse.requests) {
      expect(request.headers.authorization).toBe(`Bearer ${SECRET}`);
      expect(request.headers.dpop).toBeUndefined();
    }
    // Every message, session traffic included, is an audit event; only the tool call spent a use.
    const { rows } = await services.runtime.pool.query<{ data: { mcp_method?: string; operation?: string; uses?: number } }>(
      `SELECT data FROM audit_events WHERE type = 'gateway.call' AND outcome = 'success' AND connector_id = 'tools' ORDER BY seq`,
    );
    const methods = rows.map((row) => row.data.mcp_method);
    expect(methods).toEqual(expect.arrayContaining(['initialize', 'notifications/initialized', 'tools/list', 'tools/call']));
    expect(rows.find((row) => row.data.mcp_method === 'tools/call')?.data).toMatchObject({ operation: 'transfer', uses: 1 });
  });

  it('streams SSE answers through and cuts JSON tool lists too', async () => {
    const { taskToken } = await task('tools-json');
    const { accessToken } = await agentOf(false).credential(taskToken, { connector: 'tools-json', action: 'lookup' });
    const client = await fixedClient('tools-json', accessToken);
    expect((await client.listTools()).tools.map((tool) => tool.name).sort()).toEqual(['lookup', 'slow', 'transfer']);

    // The raw SSE answer of the other server, as the gateway passes it.
    const { taskToken: sseTask } = await task();
    const lookup = await agentOf(false).credential(sseTask, { connector: 'tools', action: 'lookup' });
    const headers = { authorization: `Bearer ${lookup.accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const init = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
      }),
    });
    expect(init.status).toBe(200);
    expect(init.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const session = init.headers.get('mcp-session-id')!;
    expect(session).toEqual(expect.any(String));
    await init.text();
    const list = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers: { ...headers, 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }),
    });
    const text = await list.text();
    expect(text).toMatch(/^event: message\n(?:id: .*\n)?data: /);
    const data = JSON.parse(
      text
        .split('\n')
        .find((line) => line.startsWith('data: '))!
        .slice(6),
    );
    expect(data.result.tools.map((tool: { name: string }) => tool.name).sort()).toEqual(['lookup', 'slow', 'transfer']);
  });

  it('lists the tools the verified task declares, not a task row a DBA widened since', async () => {
    const { taskToken, taskId } = await task();
    const { accessToken } = await agentOf(false).credential(taskToken, { connector: 'tools', action: 'lookup' });
    const client = await fixedClient('tools', accessToken);
    expect((await client.listTools()).tools.map((tool) => tool.name).sort()).toEqual(['lookup', 'slow', 'transfer']);
    // The credential is now in the gateway's memory; the DBA (no master key) adds `wipe` to the task.
    const dba = new PgClient({ connectionString: services.db.url });
    await dba.connect();
    try {
      await dba.query(`UPDATE tasks SET allowed = allowed || '[{"connector":"tools","actions":["wipe"]}]'::jsonb WHERE id = $1`, [taskId]);
    } finally {
      await dba.end();
    }
    const listed = await client.listTools().then(
      (answer) => answer.tools.map((tool) => tool.name),
      () => [] as string[],
    );
    expect(listed).not.toContain('wipe');
  });

  it('streams each SSE event as the server sends it, not when the answer ends', async () => {
    const { taskToken } = await task();
    const { accessToken } = await agentOf(false).credential(taskToken, { connector: 'tools', action: 'slow' });
    const headers: Record<string, string> = {
      authorization: `Bearer ${accessToken}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
    };
    const post = (body: unknown) => fetch(`${services.gatewayUrl}/connectors/tools`, { method: 'POST', headers, body: JSON.stringify(body) });
    const init = await post({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    });
    headers['mcp-session-id'] = init.headers.get('mcp-session-id')!;
    await init.text();
    expect((await post({ jsonrpc: '2.0', method: 'notifications/initialized' })).status).toBe(202);

    const running = await post({
      jsonrpc: '2.0',
      id: 2,
      method: 'tools/call',
      params: { name: 'slow', arguments: { step: 's1' }, _meta: { progressToken: 'p1' } },
    });
    expect(running.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = running.body!.getReader();
    const decoder = new TextDecoder();
    let received = '';
    while (!received.includes('notifications/progress')) {
      const { value, done } = await reader.read();
      if (done) break;
      received += decoder.decode(value, { stream: true });
    }
    // The progress event is through while the tool is still waiting: nothing was held back.
    expect(received).toContain('"progressToken":"p1"');
    expect(received).not.toContain('finished s1');
    sse.releaseSlow();
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) received += decoder.decode(chunk.value, { stream: true });
    expect(received).toContain('finished s1');
  });

  it('refuses arguments outside the constraints, another tool, and a replayed one-use credential, with nothing reaching the server', async () => {
    // The client holds one credential for transfers to acct_1 of at most 100, and tries more with it.
    const { taskToken } = await task();
    const agent = agentOf(false);
    const transfer = await agent.credential(taskToken, { connector: 'tools', action: 'transfer', constraints: { to: 'acct_1', amount_max: 100 } });
    const client = await fixedClient('tools', transfer.accessToken);
    const calls = toolCallsSeen(sse).length;
    const ran = sse.toolCalls.length;

    await expect(client.callTool({ name: 'transfer', arguments: { to: 'acct_1', amount: 500 } })).rejects.toMatchObject({
      code: -32003,
      data: { error: 'insufficient_scope', rule: 'constraint:amount_max' },
    });
    await expect(client.callTool({ name: 'transfer', arguments: { to: 'acct_2', amount: 5 } })).rejects.toMatchObject({
      code: -32003,
      data: { rule: 'constraint:to' },
    });
    // Exact numbers: a value that JSON.parse rounds into the grant is refused as written.
    const raw = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers: { authorization: `Bearer ${transfer.accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"transfer","arguments":{"to":"acct_1","amount":100.0000000000000000001}}}',
    });
    expect(raw.status).toBe(200);
    expect(await raw.json()).toMatchObject({ id: 9, error: { code: -32602, data: { error: 'invalid_request', field: 'body.params.arguments.amount' } } });
    await expect(client.callTool({ name: 'wipe', arguments: {} })).rejects.toMatchObject({ code: -32003, data: { rule: 'action' } });
    // Inside the constraints: the single use is spent; the same credential replayed is refused.
    expect((await client.callTool({ name: 'transfer', arguments: { to: 'acct_1', amount: 5 } })).content).toEqual([{ type: 'text', text: 'sent 5 to acct_1' }]);
    await expect(client.callTool({ name: 'transfer', arguments: { to: 'acct_1', amount: 5 } })).rejects.toMatchObject({
      code: 401,
      message: expect.stringMatching(/invalid_token/),
    });

    // One call went through (the in-bounds one, which spent the single use); the refused ones never left the gateway.
    expect(toolCallsSeen(sse).length).toBe(calls + 1);
    expect(sse.toolCalls.length).toBe(ran + 1);
  });

  it('records a bounded part of a long array of arguments in the audit log (each string would become a 76-character HMAC)', async () => {
    const { taskToken } = await task();
    const transfer = await agentOf(false).credential(taskToken, { connector: 'tools', action: 'transfer', constraints: { to: 'acct_1', amount_max: 100 } });
    // 20,000 one-letter strings (100 kB of body) under a constrained argument: refused, and audited.
    const refused = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers: { authorization: `Bearer ${transfer.accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'tools/call',
        params: { name: 'transfer', arguments: { to: Array(20_000).fill('a'), amount: 5 } },
      }),
    });
    expect(await refused.json()).toMatchObject({ id: 1, error: { data: { rule: 'constraint:to' } } });
    const { rows } = await services.runtime.pool.query<{ size: number; data: { constraints: Array<{ name: string; actual: unknown[] }> } }>(
      `SELECT pg_column_size(data) AS size, data FROM audit_events WHERE type = 'gateway.call' AND data->>'jti' = $1`,
      [JSON.parse(Buffer.from(transfer.accessToken.split('.')[1], 'base64url').toString()).jti],
    );
    expect(rows).toHaveLength(1);
    const actual = rows[0].data.constraints.find((entry) => entry.name === 'to')!.actual;
    expect(actual).toHaveLength(33);
    expect(actual[0]).toMatch(/^hmac-sha256:/);
    expect(actual[32]).toBe('[19968 more]');
    expect(rows[0].size).toBeLessThan(16_384);
  });

  it('refuses a tool the connector does not list, other MCP methods and JSON-RPC batches', async () => {
    const { taskToken } = await task();
    const { accessToken } = await agentOf(false).credential(taskToken, { connector: 'tools', action: 'lookup' });
    const post = (body: unknown) =>
      fetch(`${services.gatewayUrl}/connectors/tools`, {
        method: 'POST',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify(body),
      });
    const before = sse.requests.length;
    const unknown = await post({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'shell', arguments: {} } });
    // Refusals of a request are JSON-RPC errors answering its id: the client fails the call, not the session.
    expect(unknown.status).toBe(200);
    expect(await unknown.json()).toMatchObject({ jsonrpc: '2.0', id: 1, error: { code: -32003, data: { error: 'insufficient_scope', rule: 'operation' } } });
    const resources = await post({ jsonrpc: '2.0', id: 2, method: 'resources/read', params: { uri: 'file:///etc/passwd' } });
    expect(await resources.json()).toMatchObject({ id: 2, error: { code: -32003, data: { rule: 'mcp_method' } } });
    // A free notification's method goes into the append-only audit log as sent: not one of 100 kB.
    const long = await post({ jsonrpc: '2.0', method: `notifications/${'x'.repeat(100_000)}` });
    expect(long.status).toBe(403);
    expect(await long.json()).toMatchObject({ rule: 'mcp_method' });
    const { rows } = await services.runtime.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM audit_events WHERE connector_id = 'tools' AND length(data->>'mcp_method') > 128`,
    );
    expect(rows[0].n).toBe('0');
    const batch = await post([{ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'lookup', arguments: { q: 'x' } } }]);
    expect(batch.status).toBe(400);
    const path = await fetch(`${services.gatewayUrl}/connectors/tools/other`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}` } });
    expect(path.status).toBe(400);
    expect(sse.requests.length).toBe(before);
  });

  it('refuses messages a case-insensitive server would read otherwise, and credentials of another connector', async () => {
    const { taskToken } = await task();
    const agent = agentOf(false);
    const { accessToken } = await agent.credential(taskToken, { connector: 'tools', action: 'lookup' });
    const transfer = await agent.credential(taskToken, { connector: 'tools', action: 'transfer', constraints: { to: 'acct_1', amount_max: 100 } });
    const post = (token: string, body: string, connector = 'tools') =>
      fetch(`${services.gatewayUrl}/connectors/${connector}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body,
      });
    const before = sse.requests.length;
    const jsonBefore = json.requests.length;
    // To Go's encoding/json (the Go MCP SDK) this "response" is a tools/call of a tool the credential does not grant.
    const response = await post(accessToken, '{"jsonrpc":"2.0","id":1,"result":{},"Method":"tools/call","Params":{"name":"wipe","arguments":{}}}');
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: 'invalid_request' });
    // Arguments under a case-folded name: the checked ones would be absent, the upstream's out of bounds.
    const folded = await post(
      transfer.accessToken,
      '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"transfer","Arguments":{"to":"acct_9","amount":100000}}}',
    );
    expect(await folded.json()).toMatchObject({ id: 2, error: { code: -32602, data: { error: 'invalid_request' } } });
    const twice = await post(
      transfer.accessToken,
      '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"transfer","arguments":{"to":"acct_1","amount":5},"ARGUMENTS":{"to":"acct_9","amount":100000}}}',
    );
    // (Refused by the strict JSON reading itself, before the message has an id to answer.)
    expect(twice.status).toBe(400);
    const unsafeId = await post(accessToken, '{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}');
    expect(unsafeId.status).toBe(400);
    // The credential's audience is one connector: another mcp connector refuses it.
    const elsewhere = await post(accessToken, '{"jsonrpc":"2.0","id":4,"method":"ping"}', 'tools-json');
    expect(elsewhere.status).toBe(401);
    expect(elsewhere.headers.get('www-authenticate')).toContain('resource_metadata=');
    expect(sse.requests.length).toBe(before);
    expect(json.requests.length).toBe(jsonBefore);
  });

  it('masks the connector credential echoed in SSE events and JSON answers, as on HTTP', async () => {
    for (const connector of ['tools', 'tools-json']) {
      const { taskToken } = await task(connector);
      const { accessToken } = await agentOf(false).credential(taskToken, { connector, action: 'lookup' });
      const client = await fixedClient(connector, accessToken);
      // The tool answers `found <q>`: an upstream that echoes its credential into a streamed event.
      const result = await client.callTool({ name: 'lookup', arguments: { q: `${SECRET} and ${Buffer.from(SECRET).toString('base64')}` } });
      const text = JSON.stringify(result);
      expect(text).toContain('found ');
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain(Buffer.from(SECRET).toString('base64'));
    }
  });

  it('honours a session id only for the task that opened it', async () => {
    const { taskToken: first } = await task();
    const { taskToken: second } = await task();
    const mine = await agentOf(false).credential(first, { connector: 'tools', action: 'lookup' });
    const theirs = await agentOf(false).credential(second, { connector: 'tools', action: 'lookup' });
    const transport = new StreamableHTTPClientTransport(new URL(`${services.gatewayUrl}/connectors/tools`), {
      requestInit: { headers: { authorization: `Bearer ${mine.accessToken}` } },
    });
    const client = new Client({ name: 'first-task', version: '1.0.0' });
    await client.connect(transport);
    clients.push(client);
    const session = transport.sessionId!;
    const before = sse.requests.length;
    const headers = (token: string, id: string) => ({
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-session-id': id,
      'mcp-protocol-version': '2025-06-18',
    });
    // Another task's credential, with this task's session id: neither a call nor the event stream (and its replay) reaches the session.
    const call = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers: headers(theirs.accessToken, session),
      body: JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'tools/call', params: { name: 'lookup', arguments: { q: 'their data' } } }),
    });
    expect(await call.json()).toMatchObject({ id: 5, error: { code: -32003, data: { rule: 'mcp_session' } } });
    const stream = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      headers: { ...headers(theirs.accessToken, session), accept: 'text/event-stream', 'last-event-id': '1' },
    });
    expect(stream.status).toBe(403);
    expect(await stream.json()).toMatchObject({ rule: 'mcp_session' });
    // A session id the gateway never saw opened is refused too.
    const made = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers: headers(mine.accessToken, '00000000-0000-4000-8000-000000000000'),
      body: '{"jsonrpc":"2.0","id":6,"method":"ping"}',
    });
    expect(await made.json()).toMatchObject({ id: 6, error: { data: { rule: 'mcp_session' } } });
    // (The first client's own event stream may open meanwhile: look for the refused requests themselves.)
    const reached = sse.requests.slice(before);
    expect(reached.filter((request) => request.headers['last-event-id'] !== undefined || request.message?.method !== undefined)).toEqual([]);
    // The task that opened it goes on.
    expect((await client.callTool({ name: 'lookup', arguments: { q: 'mine' } })).content).toEqual([{ type: 'text', text: 'found mine' }]);
    // Once the session is ended (DELETE), its id is forgotten.
    await transport.terminateSession();
    const ended = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers: headers(mine.accessToken, session),
      body: '{"jsonrpc":"2.0","id":8,"method":"ping"}',
    });
    expect(await ended.json()).toMatchObject({ id: 8, error: { data: { rule: 'mcp_session' } } });
  });

  it('names the protected resource metadata in its challenges and serves it (RFC 9728)', async () => {
    const refused = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
    });
    expect(refused.status).toBe(401);
    const metadataUrl = `${services.gatewayUrl}/.well-known/oauth-protected-resource/connectors/tools`;
    expect(refused.headers.get('www-authenticate')).toContain(`resource_metadata="${metadataUrl}"`);
    const metadata = await fetch(metadataUrl);
    expect(metadata.status).toBe(200);
    expect(await metadata.json()).toEqual({
      resource: `${services.gatewayUrl}/connectors/tools`,
      resource_name: 'MCP tools',
      authorization_servers: [services.issuer],
      bearer_methods_supported: ['header'],
      dpop_signing_alg_values_supported: expect.arrayContaining(['ES256']),
      authorization_details_types_supported: ['connector'],
    });
    expect((await fetch(`${services.gatewayUrl}/.well-known/oauth-protected-resource/connectors/nope`)).status).toBe(404);
  });

  it('publishes no documentation link that nothing serves', async () => {
    const metadata = (await (await fetch(`${services.gatewayUrl}/.well-known/oauth-protected-resource/connectors/tools`)).json()) as Record<string, unknown>;
    const discovery = (await (await fetch(`${services.issuer}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
    for (const url of [metadata.resource_documentation, discovery.service_documentation].filter((value) => value !== undefined)) {
      expect((await fetch(url as string)).status).toBe(200);
    }
  });

  it('puts the metadata URL at the host root when WRIT_GATEWAY_URL has a path (RFC 9728 §3.1) and serves it there', async () => {
    // A gateway published as http://127.0.0.1:<port>/gw: the reverse proxy strips /gw before the
    // gateway, and routes the host's /.well-known/oauth-protected-resource/gw/... to it as is.
    const prefixed = await startTestServices({ db: services.db, gateway: createGatewayApp, gatewayPath: '/gw', env: { WRIT_ISSUER: services.issuer } });
    try {
      const origin = new URL(prefixed.gatewayUrl).origin;
      expect(prefixed.gatewayUrl).toBe(`${origin}/gw`);
      const refused = await fetch(`${origin}/connectors/tools`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      });
      expect(refused.status).toBe(401);
      const metadataUrl = `${origin}/.well-known/oauth-protected-resource/gw/connectors/tools`;
      expect(refused.headers.get('www-authenticate')).toContain(`resource_metadata="${metadataUrl}"`);
      const metadata = await fetch(metadataUrl);
      expect(metadata.status).toBe(200);
      expect(await metadata.json()).toMatchObject({ resource: `${origin}/gw/connectors/tools`, authorization_servers: [services.issuer] });
      expect((await fetch(`${origin}/.well-known/oauth-protected-resource/other/connectors/tools`)).status).toBe(404);
      expect((await fetch(`${origin}/.well-known/oauth-protected-resource/gw/connectors/nope`)).status).toBe(404);
    } finally {
      await prefixed.close();
    }
  });

  it('holds every message to the request_headers its tools declare: no tenant or account header reaches the server', async () => {
    // An MCP server may act on a header as an HTTP API does (a tenant, an account or a toolset it
    // forwards to its own upstream, read from the request in the tool handler).
    const created = await admin('POST', '/v1/connectors', {
      id: 'tools-headers',
      kind: 'mcp',
      name: 'MCP tools-headers',
      base_url: sse.url,
      operations: TOOLS.map((tool) =>
        tool.name === 'transfer'
          ? { ...tool, request_headers: ['Idempotency-Key'] }
          : tool.name === 'lookup'
            ? { ...tool, request_headers: ['Idempotency-Key', 'X-Trace-Note'] }
            : tool,
      ),
      credential: { type: 'bearer', token: SECRET },
    });
    expect(created.status).toBe(201);
    const listing = await admin('POST', '/v1/connectors', {
      id: 'bad-headers',
      kind: 'mcp',
      name: 'Bad',
      base_url: sse.url,
      operations: [{ name: 'lookup', risk: 'read', request_headers: ['Authorization'] }],
    });
    expect(listing.status).toBe(400);
    expect((listing.body.fields as Array<{ field: string }>).map((error) => error.field)).toEqual(['operations[0].request_headers[0]']);

    const { taskToken } = await task('tools-headers');
    const agent = agentOf(false);
    const transfer = await agent.credential(taskToken, { connector: 'tools-headers', action: 'transfer', constraints: { to: 'acct_1', amount_max: 100 } });
    const lookup = await agent.credential(taskToken, { connector: 'tools-headers', action: 'lookup' });
    const base = (token: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' });
    const post = (headers: Record<string, string>, body: unknown) =>
      fetch(`${services.gatewayUrl}/connectors/tools-headers`, { method: 'POST', headers, body: JSON.stringify(body) });
    const initialize = {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    };
    const before = sse.requests.length;

    // A session opened with a tenant header (the server may keep it for the calls that follow), also spelled with `_`.
    for (const header of ['X-Tenant-ID', 'x_tenant_id']) {
      const refused = await post({ ...base(lookup.accessToken), [header]: 'tenant_other' }, initialize);
      expect(await refused.json()).toMatchObject({
        id: 1,
        error: { code: -32602, data: { error: 'invalid_request', field: `header.${header}` } },
      });
    }
    // A header one tool lists is not for the session every credential of the task shares.
    const partly = await post({ ...base(lookup.accessToken), 'x-trace-note': 'n' }, initialize);
    expect(await partly.json()).toMatchObject({ id: 1, error: { data: { field: 'header.x-trace-note' } } });
    // A tool call with one, and the event stream with one.
    const call = await post(
      { ...base(transfer.accessToken), 'x-tenant-id': 'tenant_other' },
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'transfer', arguments: { to: 'acct_1', amount: 5 } } },
    );
    expect(await call.json()).toMatchObject({ id: 2, error: { code: -32602, data: { field: 'header.x-tenant-id' } } });
    const stream = await fetch(`${services.gatewayUrl}/connectors/tools-headers`, {
      headers: { authorization: `Bearer ${lookup.accessToken}`, accept: 'text/event-stream', 'openai-organization': 'org_other' },
    });
    expect(stream.status).toBe(400);
    expect(await stream.json()).toMatchObject({ error: 'invalid_request', field: 'header.openai-organization' });
    expect(sse.requests.length).toBe(before);

    // The SDK client, with the transport's own headers and a listed one, works as before; the header reaches the server.
    const transport = new StreamableHTTPClientTransport(new URL(`${services.gatewayUrl}/connectors/tools-headers`), {
      requestInit: { headers: { authorization: `Bearer ${transfer.accessToken}`, 'idempotency-key': 'k1' } },
    });
    const client = new Client({ name: 'listed-headers', version: '1.0.0' });
    await client.connect(transport);
    clients.push(client);
    expect((await client.listTools()).tools.map((tool) => tool.name).sort()).toEqual(['lookup', 'slow', 'transfer']);
    expect((await client.callTool({ name: 'transfer', arguments: { to: 'acct_1', amount: 5 } })).content).toEqual([{ type: 'text', text: 'sent 5 to acct_1' }]);
    const seen = sse.requests.slice(before).filter((request) => request.message?.method === 'tools/call');
    expect(seen.map((request) => request.headers['idempotency-key'])).toEqual(['k1']);
    expect(sse.requests.slice(before).every((request) => request.headers['x-tenant-id'] === undefined)).toBe(true);
  });

  it('keeps roots from the agent: the server keeps the directories it was given', async () => {
    // Servers take the client's roots as their boundary (the official filesystem server replaces
    // the directories it was started with): the agent must not widen them with its own answer.
    const { taskToken } = await task();
    const { accessToken } = await agentOf(false).credential(taskToken, { connector: 'tools', action: 'lookup' });
    const before = sse.requests.length;
    const transport = new StreamableHTTPClientTransport(new URL(`${services.gatewayUrl}/connectors/tools`), {
      requestInit: { headers: { authorization: `Bearer ${accessToken}` } },
    });
    const rooted = new Client({ name: 'rooted-agent', version: '1.0.0' }, { capabilities: { roots: { listChanged: true } } });
    await expect(rooted.connect(transport)).rejects.toMatchObject({ code: -32003, data: { error: 'insufficient_scope', rule: 'mcp_roots' } });
    await rooted.close().catch(() => undefined);
    const headers = { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
    const folded = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 2,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: { Roots: {} }, clientInfo: { name: 'raw', version: '1' } },
      }),
    });
    expect(await folded.json()).toMatchObject({ id: 2, error: { data: { rule: 'mcp_roots' } } });
    const changed = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/roots/list_changed' }),
    });
    expect(changed.status).toBe(403);
    expect(await changed.json()).toMatchObject({ rule: 'mcp_roots' });
    // An answer to a roots/list the server sent anyway (the SDK server checks the capability only in strict mode).
    const answer = await fetch(`${services.gatewayUrl}/connectors/tools`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: 0, result: { roots: [{ uri: 'file:///', name: 'everything' }] } }),
    });
    expect(answer.status).toBe(403);
    expect(await answer.json()).toMatchObject({ rule: 'mcp_roots' });
    expect(sse.requests.length).toBe(before);
    // Without roots, the same client connects.
    expect((await (await fixedClient('tools', accessToken)).listTools()).tools.length).toBe(3);
  });

  it('validates mcp connectors at registration', async () => {
    const bad = await admin('POST', '/v1/connectors', {
      id: 'bad-mcp',
      kind: 'mcp',
      name: 'Bad',
      base_url: 'http://127.0.0.1:9/mcp',
      operations: [{ name: 'x', method: 'POST', path: '/x', risk: 'read', constraints: { a: { in: 'body', field: 'a', op: 'eq' } } }],
    });
    expect(bad.status).toBe(400);
    const fields = (bad.body.fields as Array<{ field: string }>).map((error) => error.field).sort();
    expect(fields).toEqual(['operations[0].constraints.a.in', 'operations[0].method', 'operations[0].path']);
    const http = await admin('POST', '/v1/connectors', {
      id: 'bad-http',
      name: 'Bad',
      base_url: 'http://127.0.0.1:9',
      operations: [{ name: 'x', method: 'POST', path: '/x', risk: 'read', constraints: { a: { in: 'arguments', field: 'a', op: 'eq' } } }],
    });
    expect(http.status).toBe(400);
    const kind = await admin('POST', '/v1/connectors', { id: 'bad-kind', kind: 'grpc', name: 'Bad', base_url: 'http://127.0.0.1:9', operations: [] });
    expect(kind.status).toBe(400);
  });

  describe('an upstream deadline passing mid-answer', () => {
    // A second gateway over the same database, with a deadline short enough to wait out.
    let short: TestServices;
    let shortUrl: string;
    let stalling: StallingUpstream;
    beforeAll(async () => {
      stalling = await startStallingUpstream();
      for (const mode of ['json', 'sse', 'quiet', 'reset'] as const) {
        const created = await admin('POST', '/v1/connectors', {
          id: `stall-${mode}`,
          kind: 'mcp',
          name: `MCP stall-${mode}`,
          base_url: `${stalling.url}/${mode}`,
          operations: TOOLS,
          credential: { type: 'bearer', token: SECRET },
        });
        expect(created.status).toBe(201);
      }
      short = await startSecondInstance(services, { gateway: createGatewayApp, env: { WRIT_UPSTREAM_TIMEOUT_MS: '700' } });
      shortUrl = `http://127.0.0.1:${(short.apps[short.apps.length - 1].getHttpServer().address() as AddressInfo).port}`;
    });
    afterAll(async () => {
      await short.close();
      await stalling.close();
    });

    /** A raw `tools/list` through the short-deadline gateway, with a lookup credential of a fresh task. */
    const listTools = async (connector: string) => {
      const { taskToken, taskId } = await task(connector);
      const { accessToken } = await agentOf(false).credential(taskToken, { connector, action: 'lookup' });
      const response = await fetch(`${shortUrl}/connectors/${connector}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: '{"jsonrpc":"2.0","id":7,"method":"tools/list"}',
      });
      return { response, taskId };
    };
    /** The gateway events of a task once both gateways have written theirs (the call's, then the upstream's). */
    const gatewayEvents = async (taskId: string) => {
      await Promise.all([services.runtime.audit.drain(), short.runtime.audit.drain()]);
      const { rows } = await services.runtime.pool.query<{ type: string; outcome: string; data: Record<string, unknown> }>(
        `SELECT type, outcome, data FROM audit_events WHERE task_id = $1 AND type LIKE 'gateway.%' ORDER BY seq`,
        [taskId],
      );
      return rows;
    };

    it('answers 504 when the deadline passes while a JSON tool list is read whole, and audits it once as upstream_timeout', async () => {
      const started = Date.now();
      const { response, taskId } = await listTools('stall-json');
      // Nothing of the answer had reached the agent (the list is cut before it is sent): the gateway can still say why.
      expect(response.status).toBe(504);
      expect(response.headers.get('content-type')).toMatch(/^application\/json/);
      expect(response.headers.get('cache-control')).toBe('no-store');
      expect(await response.json()).toEqual({ error: 'gateway_timeout', error_description: 'the upstream API did not answer in time' });
      // Not an early failure: the 700 ms deadline passed. A libuv timer counts from the event loop's
      // time at the start of its turn, so on a busy box (this process also runs the services) it
      // fires up to one long turn early by the wall clock: the bound leaves room for that.
      expect(Date.now() - started).toBeGreaterThanOrEqual(350);
      const events = await gatewayEvents(taskId);
      expect(events.map((event) => [event.type, event.outcome])).toEqual([
        ['gateway.call', 'success'],
        ['gateway.upstream', 'failure'],
      ]);
      expect(events[1].data).toMatchObject({ mcp_method: 'tools/list', status: 504, upstream_status: 200, error: 'upstream_timeout' });
      expect(events[1].data.bytes).toBeGreaterThan(0);
    });

    it('answers 502 when the upstream resets its connection while a JSON tool list is read whole', async () => {
      const { response, taskId } = await listTools('stall-reset');
      expect(response.status).toBe(502);
      expect(await response.json()).toEqual({ error: 'bad_gateway', error_description: 'the upstream API broke off its answer' });
      const events = await gatewayEvents(taskId);
      expect(events.map((event) => event.type)).toEqual(['gateway.call', 'gateway.upstream']);
      expect(events[1].outcome).toBe('failure');
      expect(events[1].data).toMatchObject({ status: 502, upstream_status: 200, error: expect.any(String) });
      expect(events[1].data.error).not.toBe('upstream_timeout');
    });

    it('still just ends an SSE answer whose headers and first event reached the agent', async () => {
      const { response, taskId } = await listTools('stall-sse');
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      let received = '';
      // The first event (its tool list cut to the task) arrives, then the stream is cut at the deadline.
      const ended = await (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return 'done';
          received += decoder.decode(value, { stream: true });
        }
      })().catch((error: unknown) => String((error as Error).message ?? error));
      expect(ended).toBe('terminated');
      expect(received).toContain('"lookup"');
      expect(received).not.toContain('"wipe"');
      const events = await gatewayEvents(taskId);
      expect(events.map((event) => event.type)).toEqual(['gateway.call', 'gateway.upstream']);
      expect(events[1].data).toMatchObject({ status: 200, error: 'upstream_timeout' });
      expect(events[1].data.upstream_status).toBeUndefined();
    });

    it('answers 504 for an SSE answer that sent its headers and nothing else: nothing had reached the agent', async () => {
      const { response, taskId } = await listTools('stall-quiet');
      expect(response.status).toBe(504);
      expect(await response.json()).toMatchObject({ error: 'gateway_timeout' });
      // None of the upstream's staged headers goes with the gateway's error.
      expect(response.headers.get('x-upstream-marker')).toBeNull();
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('cache-control')).toBe('no-store');
      const events = await gatewayEvents(taskId);
      expect(events.map((event) => event.type)).toEqual(['gateway.call', 'gateway.upstream']);
      expect(events[1].data).toMatchObject({ status: 504, upstream_status: 200, error: 'upstream_timeout', bytes: 0 });
    });
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});

/** A raw MCP server that starts its answers and never finishes them. */
interface StallingUpstream {
  /** Its base: the endpoints are `/json`, `/sse`, `/quiet` and `/reset`. */
  url: string;
  close(): Promise<void>;
}

/**
 * Answers every POST with the start of a tool list for the request's id, then, by endpoint:
 * `/json` stalls in the middle of a JSON answer; `/sse` sends one whole event and stalls;
 * `/quiet` sends its SSE headers only and stalls; `/reset` sends half a JSON answer and resets
 * the connection.
 */
async function startStallingUpstream(): Promise<StallingUpstream> {
  const open = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const { id = null } = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as { id?: unknown };
      const tools = ['lookup', 'wipe'].map((name) => ({ name, inputSchema: { type: 'object' } }));
      const list = JSON.stringify({ jsonrpc: '2.0', id, result: { tools } });
      open.add(res);
      res.on('close', () => open.delete(res));
      if (req.url === '/sse' || req.url === '/quiet') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'x-upstream-marker': 'staged', 'x-content-type-options': 'none' });
        if (req.url === '/sse') res.write(`event: message\ndata: ${list}\n\n`);
        // (Node sends staged headers with the first body bytes: send them now.)
        else res.flushHeaders();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(list.length) });
      res.write(list.slice(0, 30));
      if (req.url === '/reset') setTimeout(() => res.socket?.resetAndDestroy(), 200);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const res of open) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
