import { Pool } from 'pg';
import { ChangeListener, ListenedCache } from '@writ/database';
import { createTestDatabase, type TestDatabase } from '@writ/testing';
import { eventually } from './support/eventually';

/**
 * The listening connection's backend stopped (SIGSTOP): a host frozen, or a connection dropped
 * on the way without a word. Its socket stays open and TCP keep-alives are answered, so only the
 * heartbeat can tell that no notification will come: whatever else is queued on the connection,
 * the listener must stop holding anything within a few heartbeats.
 */
describe('change listener over a frozen connection', () => {
  let db: TestDatabase;
  let pool: Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 1 });
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  /** Starts a listener on its own application name, and the pid of its backend. */
  const listen = async (name: string) => {
    const listener = new ChangeListener({ connection: { connectionString: db.url, application_name: name }, heartbeatMs: 200, minBackoffMs: 50 });
    const cache = new ListenedCache<string>(listener, 'writ_freeze_held', { maxEntries: 10, maxKeyLength: 64 });
    await listener.start();
    const { rows } = await pool.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [name]);
    expect(rows).toHaveLength(1);
    cache.remember('a', 'A', cache.mark());
    expect(cache.get('a')).toBe('A');
    return { listener, cache, pid: rows[0].pid };
  };

  /** Freezes the listening connection's backend (`meanwhile` runs then), and expects the cache to hold nothing within 5 s. */
  const expectDroppedWhenFrozen = async ({ cache, pid }: Awaited<ReturnType<typeof listen>>, meanwhile: () => void = () => undefined) => {
    process.kill(pid, 'SIGSTOP');
    try {
      meanwhile();
      expect(
        await eventually(
          () => cache.listening,
          (listening) => !listening,
          5000,
        ),
      ).toBe(false);
      expect(cache.get('a')).toBeUndefined();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  };

  it('stops holding anything once the connection answers no heartbeat', async () => {
    const listening = await listen('writ-freeze-idle');
    await expectDroppedWhenFrozen(listening);
    await listening.listener.stop();
  });

  it('stops holding anything also when a channel subscribed meanwhile waits for its LISTEN', async () => {
    const listening = await listen('writ-freeze-listen');
    // A channel subscribed now (as the services' caches are, once the listener started): its
    // LISTEN is sent on the frozen connection and gets no answer.
    await expectDroppedWhenFrozen(listening, () => listening.listener.subscribe('writ_freeze_later', { changed: () => undefined, reset: () => undefined }));
    await listening.listener.stop();
  });
});
