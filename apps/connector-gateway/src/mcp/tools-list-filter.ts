import { Transform, TransformCallback } from 'node:stream';

/** The largest single SSE event (or JSON response) the gateway will hold to rewrite. */
export const MAX_MCP_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Thrown when an upstream message cannot be rewritten safely (too large). */
export class McpFilterError extends Error {}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A JSON-RPC message (or batch) with every `result.tools` list cut to the granted tools; `undefined` when nothing changes. */
function filtered(message: unknown, granted: ReadonlySet<string>): unknown {
  if (Array.isArray(message)) {
    const members = message.map((member) => filtered(member, granted));
    const original: unknown[] = message;
    return members.some((member) => member !== undefined) ? members.map((member, index) => member ?? original[index]) : undefined;
  }
  if (!isPlainObject(message) || !isPlainObject(message.result) || !Array.isArray(message.result.tools)) return undefined;
  const tools = message.result.tools.filter((tool) => isPlainObject(tool) && typeof tool.name === 'string' && granted.has(tool.name));
  return { ...message, result: { ...message.result, tools } };
}

/**
 * A JSON response body with `tools/list` results filtered to the granted tools. A body that is
 * not JSON is refused ({@link McpFilterError}): clients are more lenient than `JSON.parse` (a
 * byte order mark, which `Response.json()` drops, is enough), and one that reads a tool list
 * the gateway could not would see every tool.
 */
export function filterToolsJson(text: string, granted: ReadonlySet<string>): string {
  let message: unknown;
  try {
    message = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch {
    throw new McpFilterError('the upstream answered tools/list with a JSON type and a body that is not JSON');
  }
  const changed = filtered(message, granted);
  return changed === undefined ? text : JSON.stringify(changed);
}

/** One SSE event (its lines, without the blank line that ends it) with a tool list in its data filtered. */
export function filterToolsEvent(event: string, granted: ReadonlySet<string>): string {
  // (No shortcut on the text: `"\u0074ools"` is `tools` once parsed.)
  const lines = event.split(/\r\n|\r|\n/);
  const data = lines.filter((line) => line.startsWith('data:')).map((line) => line.slice(line.startsWith('data: ') ? 6 : 5));
  if (data.length === 0) return event;
  let message: unknown;
  try {
    message = JSON.parse(data.join('\n'));
  } catch {
    return event;
  }
  const changed = filtered(message, granted);
  if (changed === undefined) return event;
  const kept = lines.filter((line) => !line.startsWith('data:'));
  return [...kept, `data: ${JSON.stringify(changed)}`].join('\n');
}

const EVENT_END = /\r\n\r\n|\n\n|\r\r/;

/**
 * Passes an SSE stream through event by event (each event goes out as soon as it is complete,
 * nothing waits for the stream's end), filtering `tools/list` results to the granted tools.
 */
export class ToolsListSseFilter extends Transform {
  private pending = '';
  private readonly decoder = new TextDecoder('utf-8');

  constructor(private readonly granted: ReadonlySet<string>) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.pending += this.decoder.decode(chunk, { stream: true });
    let out = '';
    for (let match = EVENT_END.exec(this.pending); match; match = EVENT_END.exec(this.pending)) {
      out += `${filterToolsEvent(this.pending.slice(0, match.index), this.granted)}${match[0]}`;
      this.pending = this.pending.slice(match.index + match[0].length);
    }
    if (this.pending.length > MAX_MCP_MESSAGE_BYTES) {
      done(new McpFilterError('an upstream event is larger than the gateway rewrites'));
      return;
    }
    done(null, out.length > 0 ? Buffer.from(out, 'utf8') : undefined);
  }

  override _flush(done: TransformCallback): void {
    const rest = this.pending + this.decoder.decode();
    done(null, rest.length > 0 ? Buffer.from(filterToolsEvent(rest, this.granted), 'utf8') : undefined);
  }
}
