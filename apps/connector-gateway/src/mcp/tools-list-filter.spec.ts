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
