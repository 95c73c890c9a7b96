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

/**
 * One line of an SSE event as its field and value (WHATWG HTML, "Interpreting an event stream"):
 * the name up to the first colon (the whole line when it has none: `data` alone is an empty data
 * line), the value after it without one leading space.
 */
function sseField(line: string): { field: string; value: string } {
  const colon = line.indexOf(':');
  if (colon < 0) return { field: line, value: '' };
  const value = line.slice(colon + 1);
  return { field: line.slice(0, colon), value: value.startsWith(' ') ? value.slice(1) : value };
}

/** The event with its data lines replaced by one carrying the cut tool list, its other lines kept; `undefined` when its data carries none. */
function rewrittenEvent(lines: readonly string[], data: readonly string[], granted: ReadonlySet<string>): string | undefined {
  if (data.length === 0) return undefined;
  // (No shortcut on the text: `"\u0074ools"` is `tools` once parsed.)
  let message: unknown;
  try {
    message = JSON.parse(data.join('\n'));
  } catch {
    // A client parses the same data (split into events and lines as here) and fails likewise.
    return undefined;
  }
  const changed = filtered(message, granted);
  if (changed === undefined) return undefined;
  const kept = lines.filter((line) => sseField(line).field !== 'data');
  return [...kept, `data: ${JSON.stringify(changed)}`].join('\n');
}

/** One SSE event (its lines, without the blank line that ends it) with a tool list in its data filtered. */
export function filterToolsEvent(event: string, granted: ReadonlySet<string>): string {
  const lines = event.split(/\r\n|\r|\n/);
  const data = lines.map(sseField).flatMap(({ field, value }) => (field === 'data' ? [value] : []));
  return rewrittenEvent(lines, data, granted) ?? event;
}

/** A line terminator of an SSE stream: CR LF, CR or LF. */
const LINE_END = /\r\n|\r|\n/g;

/**
 * Passes an SSE stream through event by event (each event goes out as soon as it is complete,
 * nothing waits for the stream's end), filtering `tools/list` results to the granted tools.
 * Events and lines are split as an SSE client splits them (an event ends at an empty line, a
 * line at CR LF, CR or LF, in any mix: `\n\r` ends a line and an empty one), so that the event
 * the gateway reads is the one the client dispatches; an event that is not rewritten goes out
 * byte for byte. Each chunk is scanned once and what is held is kept in pieces: a large event
 * arriving in small chunks costs its length, not its length times its number of chunks (the
 * event loop is every call's).
 */
export class ToolsListSseFilter extends Transform {
  private readonly decoder = new TextDecoder('utf-8');
  /** The text of the current event not yet sent, in pieces: its complete lines with their ends, then the line under way. */
  private held: string[] = [];
  private heldLength = 0;
  /** The line under way, in pieces. */
  private line: string[] = [];
  /** The current event's complete lines, and the values of its `data` lines. */
  private lines: string[] = [];
  private data: string[] = [];
  /** The last line ended with a CR at the end of a chunk: an LF at the start of the next one is part of that line end. */
  private afterCr = false;

  constructor(private readonly granted: ReadonlySet<string>) {
    super();
  }

  private hold(text: string): void {
    if (text.length === 0) return;
    this.held.push(text);
    this.heldLength += text.length;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const text = this.decoder.decode(chunk, { stream: true });
    let out = '';
    let position = 0;
    if (this.afterCr && text.length > 0) {
      this.afterCr = false;
      if (text.startsWith('\n')) {
        // The LF of a CR LF cut between two chunks: it goes with the line it ends.
        if (this.heldLength === 0) out += '\n';
        else this.hold('\n');
        position = 1;
      }
    }
    LINE_END.lastIndex = position;
    for (let match = LINE_END.exec(text); match; match = LINE_END.exec(text)) {
      const end = match.index + match[0].length;
      if (match[0] === '\r' && end === text.length) this.afterCr = true;
      this.line.push(text.slice(position, match.index));
      this.hold(text.slice(position, end));
      position = end;
      const line = this.line.join('');
      this.line = [];
      if (line.length > 0) {
        this.lines.push(line);
        const { field, value } = sseField(line);
        if (field === 'data') this.data.push(value);
        continue;
      }
      // An empty line: the event is complete.
      const rewritten = rewrittenEvent(this.lines, this.data, this.granted);
      out += rewritten === undefined ? this.held.join('') : `${rewritten}\n${match[0]}`;
      this.held = [];
      this.heldLength = 0;
      this.lines = [];
      this.data = [];
    }
    this.line.push(text.slice(position));
    this.hold(text.slice(position));
    if (this.heldLength > MAX_MCP_MESSAGE_BYTES) {
      done(new McpFilterError('an upstream event is larger than the gateway rewrites'));
      return;
    }
    done(null, out.length > 0 ? Buffer.from(out, 'utf8') : undefined);
  }

  override _flush(done: TransformCallback): void {
    // An event the stream ends in the middle of: clients differ on dispatching it, so it is cut too.
    const rest = this.held.join('') + this.decoder.decode();
    done(null, rest.length > 0 ? Buffer.from(filterToolsEvent(rest, this.granted), 'utf8') : undefined);
  }
}
