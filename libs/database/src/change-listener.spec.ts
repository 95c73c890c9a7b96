import { createServer, type Server } from 'node:net';
import { ChangeListener, ListenedCache } from './change-listener';

/** A listener whose connection state the test sets (the real connection is covered end to end). */
class FakeListener extends ChangeListener {
  up = true;

  constructor() {
    super({ connection: {} });
  }

  override listening(): boolean {
    return this.up;
  }
}

const options = { maxEntries: 3, maxKeyLength: 16 };

describe('ListenedCache', () => {
  it('holds what was read while listening, and drops the entry a notification names', () => {
    const listener = new FakeListener();
    const cache = new ListenedCache<string>(listener, 'writ_test_changed', options);
    cache.remember('a', 'A', cache.mark());
    cache.remember('b', 'B', cache.mark());
    expect(cache.get('a')).toBe('A');
    cache.changed('a');
    expect(cache.get('a')).toBeUndefined();
    expect(cache.get('b')).toBe('B');
  });

  it('never stores a read that a notification overtook', () => {
    const cache = new ListenedCache<string>(new FakeListener(), 'writ_test_changed', options);
    const mark = cache.mark();
    cache.changed('other');
    cache.remember('a', 'stale', mark);
    expect(cache.get('a')).toBeUndefined();
  });

  it('holds and answers nothing while the listening connection is down', () => {
    const listener = new FakeListener();
    const cache = new ListenedCache<string>(listener, 'writ_test_changed', options);
    cache.remember('a', 'A', cache.mark());
    listener.up = false;
    expect(cache.listening).toBe(false);
    expect(cache.get('a')).toBeUndefined();
    cache.remember('b', 'B', cache.mark());
    listener.up = true;
    expect(cache.get('b')).toBeUndefined();
  });

  it('drops everything on a reset (the connection was lost, or listens again)', () => {
    const cache = new ListenedCache<string>(new FakeListener(), 'writ_test_changed', options);
    const mark = cache.mark();
    cache.remember('a', 'A', mark);
    cache.reset();
    expect(cache.get('a')).toBeUndefined();
    expect(cache.size).toBe(0);
    cache.remember('a', 'A', mark);
    expect(cache.get('a')).toBeUndefined();
  });

  it.each([
    ['empty', ''],
    ['longer than any key', 'x'.repeat(17)],
    ['huge', 'x'.repeat(8000)],
  ])('drops everything on a payload that names no key (%s)', (_name, payload) => {
    const cache = new ListenedCache<string>(new FakeListener(), 'writ_test_changed', options);
    cache.remember('a', 'A', cache.mark());
    cache.remember('b', 'B', cache.mark());
    cache.changed(payload);
    expect(cache.size).toBe(0);
  });

  it('keeps its size bounded and holds nothing once closed', () => {
    const cache = new ListenedCache<string>(new FakeListener(), 'writ_test_changed', options);
    for (const key of ['a', 'b', 'c', 'd']) cache.remember(key, key.toUpperCase(), cache.mark());
    expect(cache.size).toBeLessThanOrEqual(3);
    expect(cache.get('d')).toBe('D');
    cache.close();
    expect(cache.get('d')).toBeUndefined();
    cache.remember('e', 'E', cache.mark());
    expect(cache.size).toBe(0);
  });
});

describe('ChangeListener', () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    // Accepts and closes at once: a database that cannot be listened to.
    server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('refuses a channel name that is not an identifier', () => {
    const listener = new ChangeListener({ connection: {} });
    expect(() => listener.subscribe('writ; DROP TABLE agents', { changed: () => undefined, reset: () => undefined })).toThrow(/channel/);
  });

  it('starts without a connection, says it is not listening, reports the loss and retries', async () => {
    const lost: Array<string | undefined> = [];
    const listener = new ChangeListener({
      connection: { host: '127.0.0.1', port, connectionTimeoutMillis: 1000 },
      onLost: (error) => lost.push(error),
      minBackoffMs: 5,
    });
    const cache = new ListenedCache<string>(listener, 'writ_test_changed', options);
    await listener.start();
    expect(listener.listening('writ_test_changed')).toBe(false);
    cache.remember('a', 'A', cache.mark());
    expect(cache.get('a')).toBeUndefined();
    for (let tries = 0; tries < 200 && lost.length < 2; tries += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(lost.length).toBeGreaterThanOrEqual(2);
    await listener.stop();
  });
});
