import { createServer, Server } from 'node:http';
import { request } from 'undici';
import { loadConfig } from '@writ/config';
import { UpstreamNetworks } from '@writ/connectors';
import { createUpstreamDispatcher, guardedLookup, LookupFunction, UPSTREAM_ADDRESS_REFUSED } from './upstream-dispatcher';

/** A resolver that answers from a table (a rebinding DNS server changes the table between calls). */
function tableLookup(table: Record<string, string[]>): LookupFunction & { calls: number } {
  const lookup = ((hostname, _options, callback) => {
    lookup.calls += 1;
    const addresses = table[hostname];
    if (!addresses) return callback(Object.assign(new Error('not found'), { code: 'ENOTFOUND' }), []);
    callback(
      null,
      addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
    );
  }) as LookupFunction & { calls: number };
  lookup.calls = 0;
  return lookup;
}

describe('guardedLookup', () => {
  const lookupOnce = (lookup: LookupFunction, host: string, all: boolean) =>
    new Promise<{ error: NodeJS.ErrnoException | null; address: unknown }>((resolve) => lookup(host, { all }, (error, address) => resolve({ error, address })));

  it('refuses a name when any address it resolves to is not allowed, and passes checked addresses on', async () => {
    const guarded = guardedLookup(
      new UpstreamNetworks([]),
      tableLookup({ 'rebind.example': ['93.184.215.14', '169.254.169.254'], 'ok.example': ['93.184.215.14'] }),
    );
    expect((await lookupOnce(guarded, 'rebind.example', true)).error?.code).toBe(UPSTREAM_ADDRESS_REFUSED);
    expect((await lookupOnce(guarded, 'metadata.google.internal', true)).error?.code).toBe(UPSTREAM_ADDRESS_REFUSED);
    expect(await lookupOnce(guarded, 'ok.example', true)).toEqual({ error: null, address: [{ address: '93.184.215.14', family: 4 }] });
    expect(await lookupOnce(guarded, 'ok.example', false)).toEqual({ error: null, address: '93.184.215.14' });
  });
});

describe('createUpstreamDispatcher', () => {
  let server: Server;
  let port: number;
  let hits = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      hits += 1;
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  const dispatcher = (networks: string, lookup?: LookupFunction) => createUpstreamDispatcher(loadConfig({ WRIT_UPSTREAM_ALLOWED_NETWORKS: networks }), lookup);

  it('connects to an allowed loopback upstream by address and by name', async () => {
    const agent = dispatcher('127.0.0.0/8', tableLookup({ 'upstream.test': ['127.0.0.1'] }));
    expect((await request(`http://127.0.0.1:${port}/`, { dispatcher: agent })).statusCode).toBe(200);
    expect((await request(`http://upstream.test:${port}/`, { dispatcher: agent })).statusCode).toBe(200);
    await agent.close();
  });

  it('refuses at connect time an address or a name that resolves outside the allowed networks: nothing arrives', async () => {
    const before = hits;
    const rebinding = tableLookup({ 'upstream.test': ['127.0.0.1'] });
    const agent = dispatcher('', rebinding);
    for (const url of [`http://127.0.0.1:${port}/`, `http://[::ffff:127.0.0.1]:${port}/`, `http://2130706433:${port}/`, `http://upstream.test:${port}/`]) {
      await expect(request(url, { dispatcher: agent })).rejects.toMatchObject({ code: UPSTREAM_ADDRESS_REFUSED });
    }
    expect(rebinding.calls).toBe(1);
    expect(hits).toBe(before);
    await agent.close();
  });
});
