import { Readable } from 'node:stream';
import type { McpCall } from './mcp-request';
import { mcpResponseBody } from './mcp-response';
import { MAX_MCP_MESSAGE_BYTES, McpFilterError } from './tools-list-filter';

const list: McpCall = { method: 'tools/list', spends: false, granted: new Set(['lookup']) };
const LIST = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'lookup' }, { name: 'wipe' }] } });

async function text(stream: Readable): Promise<string> {
  let out = '';
  for await (const chunk of stream) out += String(chunk);
  return out;
}

describe('mcpResponseBody', () => {
  it('rewrites a JSON tool list and its content-length', async () => {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(LIST.length) };
    const out = await text(await mcpResponseBody(Readable.from([Buffer.from(LIST)]), headers, list));
    expect(JSON.parse(out).result.tools).toEqual([{ name: 'lookup' }]);
    expect(headers['content-length']).toBe(String(Buffer.byteLength(out)));
  });

  it('passes other JSON answers through untouched, and filters SSE without a length', async () => {
    const body = Readable.from([Buffer.from(LIST)]);
    expect(await mcpResponseBody(body, { 'content-type': 'application/json' }, { ...list, method: 'tools/call' })).toBe(body);
    const headers: Record<string, string> = { 'content-type': 'text/event-stream', 'content-length': '999' };
    const out = await text(await mcpResponseBody(Readable.from([Buffer.from(`event: message\ndata: ${LIST}\n\n`)]), headers, list));
    expect(out).not.toContain('wipe');
    expect(headers['content-length']).toBeUndefined();
  });

  it('refuses to hold a tool list larger than it rewrites', async () => {
    const huge = Readable.from([Buffer.alloc(MAX_MCP_MESSAGE_BYTES), Buffer.alloc(1)]);
    await expect(mcpResponseBody(huge, { 'content-type': 'application/json' }, list)).rejects.toThrow(McpFilterError);
  });
});
