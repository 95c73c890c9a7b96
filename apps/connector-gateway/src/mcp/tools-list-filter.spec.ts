import { Readable } from 'node:stream';
import { filterToolsEvent, filterToolsJson, McpFilterError, ToolsListSseFilter } from './tools-list-filter';

const GRANTED = new Set(['lookup']);
const LIST = { jsonrpc: '2.0', id: 2, result: { tools: [{ name: 'lookup' }, { name: 'wipe' }, { title: 'no name' }], nextCursor: 'c' } };

describe('tool list filtering', () => {
  it('cuts a JSON answer (and a batch) to the granted tools, keeping the rest', () => {
    expect(JSON.parse(filterToolsJson(JSON.stringify(LIST), GRANTED))).toEqual({
      jsonrpc: '2.0',
      id: 2,
      result: { tools: [{ name: 'lookup' }], nextCursor: 'c' },
    });
    expect(JSON.parse(filterToolsJson(JSON.stringify([LIST]), GRANTED))[0].result.tools).toEqual([{ name: 'lookup' }]);
    const other = JSON.stringify({ jsonrpc: '2.0', id: 3, result: { content: [] } });
    expect(filterToolsJson(other, GRANTED)).toBe(other);
  });

  it('reads a tool list as lenient clients do, or refuses it', () => {
    // Response.json() drops a byte order mark, JSON.parse does not: the list must still be cut.
    expect(JSON.parse(filterToolsJson(`\uFEFF${JSON.stringify(LIST)}`, GRANTED)).result.tools).toEqual([{ name: 'lookup' }]);
    expect(() => filterToolsJson('not json', GRANTED)).toThrow(McpFilterError);
    // A member name written with escapes is the same member once parsed.
    const escaped = JSON.stringify(LIST).replace('"tools"', '"\\u0074ools"');
    const event = filterToolsEvent(`event: message\ndata: ${escaped}`, GRANTED);
    expect(JSON.parse(event.split('\n')[1].slice(6)).result.tools).toEqual([{ name: 'lookup' }]);
  });

  it('rewrites an SSE event, multi-line data included, and keeps its id and type', () => {
    const event = `event: message\nid: 7\ndata: ${JSON.stringify(LIST, null, 1).split('\n').join('\ndata: ')}`;
    const out = filterToolsEvent(event, GRANTED);
    expect(out.split('\n').slice(0, 2)).toEqual(['event: message', 'id: 7']);
    expect(JSON.parse(out.split('\n')[2].slice(6)).result.tools).toEqual([{ name: 'lookup' }]);
  });

  it('filters a stream event by event, whatever the chunking', async () => {
    const text = `event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\nevent: message\ndata: ${JSON.stringify(LIST)}\n\n`;
    const chunks = text.match(/[\s\S]{1,7}/g)!.map((chunk) => Buffer.from(chunk));
    let out = '';
    for await (const chunk of Readable.from(chunks).pipe(new ToolsListSseFilter(GRANTED))) out += String(chunk);
    const events = out.split('\n\n').filter(Boolean);
    expect(events).toHaveLength(2);
    expect(events[0]).toContain('notifications/progress');
    expect(JSON.parse(events[1].split('\n')[1].slice(6)).result.tools).toEqual([{ name: 'lookup' }]);
  });
});

async function through(chunks: readonly (string | Buffer)[]): Promise<string> {
  let out = '';
  for await (const chunk of Readable.from(chunks.map((chunk) => Buffer.from(chunk))).pipe(new ToolsListSseFilter(GRANTED))) out += String(chunk);
  return out;
}

describe('tool list filtering: events as an SSE client splits them', () => {
  it('ends an event at a blank line whatever its line endings (LF then CR is one)', async () => {
    // An EventSource (WHATWG) reads `\n\r` as a line end and an empty line: two events. Read as
    // one, the pair is not JSON and the tool list went through uncut.
    const other = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: {} });
    for (const [end, blank] of [
      ['\n', '\r'],
      ['\r\n', '\n'],
      ['\r', '\r'],
      ['\n', '\r\n'],
    ]) {
      const out = await through([`event: message${end}data: ${JSON.stringify(LIST)}${end}${blank}event: message${end}data: ${other}${end}${blank}`]);
      expect({ end, blank, out }).toEqual({ end, blank, out: expect.not.stringContaining('wipe') });
      expect(out).toContain('notifications/progress');
    }
  });

  it('splits events across chunks as they come, a CR LF cut between two chunks included', async () => {
    const out = await through(['data: ', JSON.stringify(LIST), '\r', '\n', '\r', '\ndata: {"jsonrpc":"2.0","method":"x"}\r\n\r\n']);
    expect(out).not.toContain('wipe');
    expect(out).toMatch(/^data: \S+\n\r\ndata: \{"jsonrpc":"2.0","method":"x"\}\r\n\r\n$/);
  });

  it('reads a "data" line without a colon as an empty data line, as clients do', async () => {
    const out = await through([`data: {"jsonrpc":"2.0","id":2,\ndata\ndata: "result":${JSON.stringify(LIST.result)}}\n\n`]);
    expect(out).not.toContain('wipe');
  });

  it('passes events it does not rewrite byte for byte', async () => {
    const text = ': keep-alive\r\n\r\nid: 1\revent: message\rdata: {"jsonrpc":"2.0","method":"notifications/progress"}\r\r\n\n';
    expect(await through([text.slice(0, 9), text.slice(9)])).toBe(text);
  });

  it('reads a large event arriving in small chunks in linear time (the event loop is shared by every call)', async () => {
    const payload = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'x'.repeat(12 * 1024 * 1024) }] } });
    const event = Buffer.from(`event: message\ndata: ${payload}\n\n`);
    const chunks: Buffer[] = [];
    for (let offset = 0; offset < event.length; offset += 8 * 1024) chunks.push(event.subarray(offset, offset + 8 * 1024));
    const started = Date.now();
    const out = await through(chunks);
    expect(out.length).toBe(event.length);
    // Rescanning the held event for its end on every chunk took about a minute here.
    expect(Date.now() - started).toBeLessThan(5_000);
  }, 120_000);
});
