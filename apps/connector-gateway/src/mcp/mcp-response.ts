import { Readable } from 'node:stream';
import type { McpCall } from './mcp-request';
import { filterToolsJson, MAX_MCP_MESSAGE_BYTES, McpFilterError, ToolsListSseFilter } from './tools-list-filter';

function contentType(headers: Record<string, string | string[]>): string {
  const value = headers['content-type'];
  return (Array.isArray(value) ? value[0] : (value ?? '')).toLowerCase();
}

/**
 * The upstream MCP response body as the agent receives it, `headers` adjusted to match. An
 * SSE stream goes through event by event, with any tool list cut to the granted tools; the
 * JSON answer to `tools/list` is read whole (up to {@link MAX_MCP_MESSAGE_BYTES}) and cut
 * likewise; anything else is passed through untouched.
 */
export async function mcpResponseBody(body: Readable, headers: Record<string, string | string[]>, mcp: McpCall): Promise<Readable> {
  const type = contentType(headers);
  if (type.startsWith('text/event-stream')) {
    delete headers['content-length'];
    const filter = new ToolsListSseFilter(mcp.granted);
    // Both ends go together: an agent that hangs up must close the upstream stream too.
    body.on('error', (error) => filter.destroy(error));
    filter.on('close', () => body.destroy());
    return body.pipe(filter);
  }
  if (mcp.method !== 'tools/list' || !/^application\/(?:[a-z0-9.+-]+\+)?json/.test(type)) return body;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_MCP_MESSAGE_BYTES) {
      body.destroy();
      throw new McpFilterError('the upstream tool list is larger than the gateway rewrites');
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  const out = Buffer.from(filterToolsJson(text, mcp.granted), 'utf8');
  headers['content-length'] = String(out.length);
  return Readable.from([out]);
}
