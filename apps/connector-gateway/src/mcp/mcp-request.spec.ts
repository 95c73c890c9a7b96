import type { ConnectorOperation } from '@writ/database';
import { InsufficientScopeError, InvalidRequestError } from '@writ/oauth';
import { classifyMcpRequest, mcpRequestHeaders } from './mcp-request';

const TOOLS = [
  { name: 'transfer', risk: 'write', constraints: { amount_max: { in: 'arguments', field: 'amount', op: 'lte' } } },
  { name: 'lookup', risk: 'read', constraints: {} },
] as unknown as ConnectorOperation[];

const call = (params: unknown) => ({ jsonrpc: '2.0', id: 1, method: 'tools/call', params });

describe('classifyMcpRequest', () => {
  it('makes a granted tools/call an operation whose constraints read params.arguments', () => {
    const classified = classifyMcpRequest('POST', call({ name: 'transfer', arguments: { amount: 5 } }), TOOLS, ['transfer']);
    expect(classified).toMatchObject({ method: 'tools/call', spends: true });
    expect(classified.tool?.constraints).toEqual({ amount_max: { in: 'body', field: 'params.arguments.amount', op: 'lte' } });
  });

  it('lets session traffic through without spending, and lists only visible catalogue tools', () => {
    for (const method of ['initialize', 'ping', 'tools/list', 'notifications/initialized', 'notifications/cancelled']) {
      expect(classifyMcpRequest('POST', { jsonrpc: '2.0', id: 1, method }, TOOLS, ['lookup'])).toMatchObject({ method, spends: false });
    }
    expect(classifyMcpRequest('POST', { jsonrpc: '2.0', id: 7, result: {} }, TOOLS, ['lookup']).method).toBe('response');
    expect(classifyMcpRequest('GET', undefined, TOOLS, ['lookup']).spends).toBe(false);
    expect([...classifyMcpRequest('DELETE', undefined, TOOLS, ['lookup'], ['lookup', 'transfer', 'not-in-catalogue']).granted].sort()).toEqual([
      'lookup',
      'transfer',
    ]);
  });

  it.each([
    ['another tool', call({ name: 'lookup', arguments: {} }), 'action'],
    ['a tool outside the catalogue', call({ name: 'shell' }), 'operation'],
    ['a granted tool in another case', call({ name: 'Transfer', arguments: { amount: 1 } }), 'operation'],
    ['a granted tool with a look-alike letter', call({ name: 'trаnsfer', arguments: { amount: 1 } }), 'operation'],
    ['resources/read', { jsonrpc: '2.0', id: 1, method: 'resources/read', params: { uri: 'file:///etc/passwd' } }, 'mcp_method'],
    ['prompts/get', { jsonrpc: '2.0', id: 1, method: 'prompts/get' }, 'mcp_method'],
    ['sampling', { jsonrpc: '2.0', id: 1, method: 'sampling/createMessage' }, 'mcp_method'],
  ])('refuses %s (403)', (_name, message, rule) => {
    const attempt = () => classifyMcpRequest('POST', message, TOOLS, ['transfer']);
    expect(attempt).toThrow(InsufficientScopeError);
    try {
      attempt();
    } catch (error) {
      expect((error as InsufficientScopeError).rule).toBe(rule);
    }
  });

  it.each([
    ['a batch', [call({ name: 'transfer', arguments: { amount: 1 } })]],
    ['no jsonrpc member', { id: 1, method: 'tools/call', params: { name: 'transfer' } }],
    ['a method that is not a string', { jsonrpc: '2.0', id: 1, method: 5 }],
    ['a tool name that is not a string', call({ name: ['transfer'] })],
    ['arguments that are not an object', call({ name: 'transfer', arguments: [5] })],
    ['nothing', undefined],
    // Case-insensitive upstreams (Go's encoding/json, ASP.NET) read these as the member itself.
    ['a "response" that is a tools/call to Go', { jsonrpc: '2.0', id: 1, result: {}, Method: 'tools/call', Params: { name: 'transfer' } }],
    ['a case-folded method beside a free one', { jsonrpc: '2.0', id: 1, method: 'ping', METHOD: 'tools/call' }],
    ['a member JSON-RPC does not define', { jsonrpc: '2.0', id: 1, method: 'ping', extra: 1 }],
    ['a method with a result', { jsonrpc: '2.0', id: 1, method: 'tools/list', result: {} }],
    ['a response with params', { jsonrpc: '2.0', id: 1, result: {}, params: { name: 'transfer' } }],
    ['case-folded tool arguments', call({ name: 'transfer', Arguments: { amount: 1e9 } })],
    ['a long-s arguments member', call({ name: 'transfer', argumentſ: { amount: 1e9 } })],
    ['a case-folded name member beside name', call({ name: 'lookup', NAME: 'transfer' })],
    ['an id beyond 2^53', { jsonrpc: '2.0', id: 2 ** 64, method: 'ping' }],
    ['a fractional id', { jsonrpc: '2.0', id: 1.5, method: 'ping' }],
    ['a null id', { jsonrpc: '2.0', id: null, method: 'ping' }],
  ])('refuses %s (400)', (_name, message) => {
    expect(() => classifyMcpRequest('POST', message, TOOLS, ['transfer'])).toThrow(InvalidRequestError);
  });

  it('renders a hostile method or tool name printable in the refusal (it reaches the agent, the challenge and the audit log)', () => {
    const hostile = 'x\r\nSet-Cookie: a=b\u0000\u202e\ud800';
    for (const message of [{ jsonrpc: '2.0', method: hostile }, call({ name: hostile })]) {
      expect(() => classifyMcpRequest('POST', message, TOOLS, ['transfer'])).toThrow(InsufficientScopeError);
      try {
        classifyMcpRequest('POST', message, TOOLS, ['transfer']);
      } catch (error) {
        expect((error as InsufficientScopeError).description).toMatch(/ x\?\?Set-Cookie: a=b\?\?\?( |$)/);
        expect((error as InsufficientScopeError).description).toMatch(/^[\x20-\x7e]+$/);
      }
    }
  });

  it('lets through only notifications whose method the audit log can hold as sent (they spend nothing)', () => {
    const notify = (method: string) => () => classifyMcpRequest('POST', { jsonrpc: '2.0', method }, TOOLS, ['transfer']);
    const longest = `notifications/${'x'.repeat(114)}`;
    expect(notify(longest)()).toMatchObject({ method: longest, spends: false });
    expect(notify('notifications/resources/list_changed')()).toMatchObject({ spends: false });
    for (const method of [
      `notifications/${'x'.repeat(1_000_000)}`,
      `${longest}x`,
      'notifications/',
      'notifications/a b',
      'notifications/\u00e9',
      'notifications/x\r\n',
    ]) {
      expect(notify(method)).toThrow(InsufficientScopeError);
      try {
        notify(method)();
      } catch (error) {
        expect((error as InsufficientScopeError).rule).toBe('mcp_method');
        expect((error as InsufficientScopeError).description.length).toBeLessThan(300);
      }
    }
  });

  it('refuses a body on GET or DELETE, and other HTTP methods', () => {
    expect(() => classifyMcpRequest('GET', {}, TOOLS, ['transfer'])).toThrow(InvalidRequestError);
    expect(() => classifyMcpRequest('PUT', call({ name: 'transfer' }), TOOLS, ['transfer'])).toThrow(InvalidRequestError);
  });
});

describe('mcpRequestHeaders', () => {
  const listed = [
    { name: 'transfer', risk: 'write', constraints: {}, request_headers: ['Idempotency-Key'] },
    { name: 'lookup', risk: 'read', constraints: {}, request_headers: ['idempotency_key', 'X-Trace-Note'] },
    { name: 'wipe', risk: 'write', constraints: {} },
  ] as unknown as ConnectorOperation[];

  it('forwards every header when no tool declares a list, as before allowlists', () => {
    expect(mcpRequestHeaders(TOOLS)).toBeUndefined();
    expect(classifyMcpRequest('POST', { jsonrpc: '2.0', id: 1, method: 'initialize' }, TOOLS, ['lookup']).headers).toBeUndefined();
    expect(classifyMcpRequest('POST', call({ name: 'wipe' }), listed, ['wipe']).headers).toBeUndefined();
  });

  it("holds a tool call to its tool's list and other messages to what every listing tool allows", () => {
    const transfer = classifyMcpRequest('POST', call({ name: 'transfer', arguments: {} }), listed, ['transfer']).headers!;
    expect(transfer.has('idempotency-key')).toBe(true);
    expect(transfer.has('x-trace-note')).toBe(false);
    expect(classifyMcpRequest('POST', call({ name: 'lookup', arguments: {} }), listed, ['lookup']).headers!.has('x-trace-note')).toBe(true);
    for (const message of [{ jsonrpc: '2.0', id: 1, method: 'initialize' }, { jsonrpc: '2.0', id: 1, result: {} }, undefined]) {
      const session = classifyMcpRequest(message ? 'POST' : 'GET', message, listed, ['lookup']).headers!;
      // (A session is shared by every credential of its task: a header only lookup lists is not for it.)
      expect(session.has('idempotency-key')).toBe(true);
      expect(session.has('x-trace-note')).toBe(false);
      expect(session.has('x-tenant-id')).toBe(false);
      for (const name of ['mcp-session-id', 'mcp-protocol-version', 'last-event-id', 'accept', 'content-type']) expect(session.has(name)).toBe(true);
    }
  });
});

describe('roots', () => {
  const initialize = (params: unknown) => ({ jsonrpc: '2.0', id: 1, method: 'initialize', params });

  it('refuses an initialize that declares roots, in any case, and the roots change notification', () => {
    for (const params of [
      { protocolVersion: '2025-06-18', capabilities: { roots: { listChanged: true } } },
      { capabilities: { roots: {} } },
      { capabilities: { Roots: {} } },
      { Capabilities: { ROOTS: null } },
    ]) {
      expect(() => classifyMcpRequest('POST', initialize(params), TOOLS, ['lookup'])).toThrow(
        expect.objectContaining({ constructor: InsufficientScopeError, rule: 'mcp_roots' }),
      );
    }
    expect(() => classifyMcpRequest('POST', { jsonrpc: '2.0', method: 'notifications/roots/list_changed' }, TOOLS, ['lookup'])).toThrow(
      expect.objectContaining({ rule: 'mcp_roots' }),
    );
  });

  it('refuses an answer carrying roots (a server may ask without the capability), not other answers', () => {
    for (const result of [{ roots: [{ uri: 'file:///' }] }, { Roots: [] }]) {
      expect(() => classifyMcpRequest('POST', { jsonrpc: '2.0', id: 3, result }, TOOLS, ['lookup'])).toThrow(expect.objectContaining({ rule: 'mcp_roots' }));
    }
    for (const result of [
      {},
      { action: 'accept', content: { roots: 'a field of the form' } },
      { role: 'assistant', content: { type: 'text', text: 'roots' } },
    ]) {
      expect(classifyMcpRequest('POST', { jsonrpc: '2.0', id: 3, result }, TOOLS, ['lookup']).method).toBe('response');
    }
    expect(classifyMcpRequest('POST', { jsonrpc: '2.0', id: 3, error: { code: -1, message: 'no roots' } }, TOOLS, ['lookup']).method).toBe('response');
  });

  it('lets an initialize with other capabilities through', () => {
    const params = { protocolVersion: '2025-06-18', capabilities: { sampling: {}, elicitation: {} }, clientInfo: { name: 'roots-less', version: '1' } };
    expect(classifyMcpRequest('POST', initialize(params), TOOLS, ['lookup']).method).toBe('initialize');
  });
});
