import type { Socket } from 'node:net';
import type { Pool } from 'pg';
import type { Logger } from 'pino';
import type { AuditService } from '@writ/audit';
import type { WritConfig } from '@writ/config';
import { FailureThrottle, sourceAddress } from './failure-throttle';
import { WritMetrics } from './metrics';

const from = (remoteAddress: string | undefined, headers: Record<string, string> = {}) => sourceAddress({ socket: { remoteAddress } as Socket, headers });

describe('sourceAddress', () => {
  it('keeps IPv4 and unwraps IPv4-mapped IPv6', () => {
    expect(from('203.0.113.7')).toBe('203.0.113.7');
    expect(from('::ffff:203.0.113.7')).toBe('203.0.113.7');
  });

  it('counts IPv6 by /64, however the address is written', () => {
    expect(from('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    expect(from('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(from('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(from('::1')).toBe('0:0:0:0::/64');
  });

  it("counts another site's browser requests apart from the address's own clients", () => {
    expect(from('203.0.113.7', { 'sec-fetch-site': 'cross-site' })).toBe('203.0.113.7#cross-site');
    expect(from('::ffff:203.0.113.7', { 'sec-fetch-site': 'Same-Site' })).toBe('203.0.113.7#cross-site');
    expect(from('2001:db8:1:2:aaaa::1', { 'sec-fetch-site': 'cross-site' })).toBe('2001:db8:1:2::/64#cross-site');
    // The console's own calls, a typed URL, and tools that send no such header: the address itself.
    expect(from('203.0.113.7', { 'sec-fetch-site': 'same-origin' })).toBe('203.0.113.7');
    expect(from('203.0.113.7', { 'sec-fetch-site': 'none' })).toBe('203.0.113.7');
    expect(from('203.0.113.7')).toBe('203.0.113.7');
  });

  it('names an unknown peer', () => {
    expect(from(undefined)).toBe('unknown');
  });
});

describe('FailureThrottle counts of blocked sources', () => {
  const config = { throttle: { windowSeconds: 60, sourceFailures: 2, clientFailures: 10, auditEvents: 1 } } as unknown as WritConfig;
  const logger = { warn: jest.fn() } as unknown as Logger;
  const windowStart = new Date('2026-01-01T00:00:00Z');

  /** A pool whose counter upsert answers `count` for the source, and that records every statement. */
  function fakePool(count: number) {
    const statements: { text: string; values: unknown[] }[] = [];
    let failFlush = false;
    const pool = {
      query: jest.fn(async (text: string, values: unknown[]) => {
        statements.push({ text, values });
        if (text.includes('unnest($1::text[], $2::timestamptz[]')) {
          if (failFlush) throw new Error('connection lost');
          return { rows: [], rowCount: 1 };
        }
        return { rows: [{ key: (values[0] as string[])[0], count, remaining: 30, window_start: windowStart }], rowCount: 1 };
      }),
    };
    return { pool: pool as unknown as Pool, statements, setFailFlush: (fail: boolean) => (failFlush = fail) };
  }

  it('answers a blocked source from memory and writes its refusals in one statement, kept when the write fails', async () => {
    const { pool, statements, setFailFlush } = fakePool(3);
    const throttle = new FailureThrottle(pool, {} as AuditService, config, logger);
    try {
      expect(await throttle.failure('admin', '203.0.113.7')).toMatchObject({ limited: true });
      expect(statements).toHaveLength(1);
      for (let n = 0; n < 50; n += 1) expect(await throttle.refuseIfBlocked('admin', '203.0.113.7')).toMatchObject({ limited: true, audit: false });
      // Failures of requests that got past the memory check before the block was known: memory too.
      expect(await throttle.failure('admin', '203.0.113.7', 'some-client')).toMatchObject({ limited: true, audit: false });
      expect(await throttle.refuseIfBlocked('admin', '198.51.100.1')).toBeUndefined();
      expect(statements).toHaveLength(1);

      setFailFlush(true);
      await expect(throttle.flush()).rejects.toThrow('connection lost');
      setFailFlush(false);
      await throttle.refuseIfBlocked('admin', '203.0.113.7');
      await throttle.flush();
      const flushes = statements.slice(1);
      expect(flushes).toHaveLength(2);
      // The failed batch's 51 and the one since: 52, in one row, as not audited one by one.
      expect(flushes[1].values).toEqual([['admin|source|203.0.113.7'], [windowStart], [60], [52]]);
      await throttle.flush();
      expect(statements).toHaveLength(3);
    } finally {
      await throttle.onModuleDestroy();
    }
  });

  it('lets a burst from one source wait for the upsert under way instead of each writing', async () => {
    const { pool, statements } = fakePool(3);
    const throttle = new FailureThrottle(pool, {} as AuditService, config, logger);
    try {
      const verdicts = await Promise.all(Array.from({ length: 100 }, () => throttle.failure('gateway', '203.0.113.8')));
      expect(verdicts.every((verdict) => verdict.limited)).toBe(true);
      expect(statements).toHaveLength(1);
      await throttle.onModuleDestroy();
      expect(statements).toHaveLength(2);
      expect(statements[1].values[3]).toEqual([99]);
    } finally {
      await throttle.onModuleDestroy();
    }
  });

  it('fails a burst waiting on an upsert that failed, instead of each trying again in turn', async () => {
    // The database answers each statement after 50 ms with an error (a pool out of connections).
    let upserts = 0;
    const pool = {
      query: jest.fn(async () => {
        upserts += 1;
        await new Promise((resolve) => setTimeout(resolve, 50));
        throw new Error('timeout exceeded when trying to connect');
      }),
    } as unknown as Pool;
    const throttle = new FailureThrottle(pool, {} as AuditService, config, logger);
    try {
      const outcomes = await Promise.allSettled(Array.from({ length: 20 }, () => throttle.failure('oauth', '203.0.113.9')));
      expect(outcomes.every((outcome) => outcome.status === 'rejected')).toBe(true);
      // One statement for the burst, answered together: not 20 statements, the last 20 × 50 ms later.
      expect(upserts).toBe(1);
      // The next failure, after the burst, tries the database again.
      await expect(throttle.failure('oauth', '203.0.113.9')).rejects.toThrow('timeout exceeded');
      expect(upserts).toBe(2);
    } finally {
      await throttle.onModuleDestroy();
    }
  });

  it('reports its blocked sources, the refusals answered from memory and the failed writes of their counts', async () => {
    const { pool, setFailFlush } = fakePool(3);
    const metrics = new WritMetrics(undefined, { defaultMetrics: false });
    const value = async (name: string, labels: Record<string, string> = {}) =>
      (await metrics.registry.getSingleMetric(name)!.get()).values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
    const throttle = new FailureThrottle(pool, {} as AuditService, config, logger, { metrics });
    try {
      expect(await value('writ_throttle_blocked_sources', { scope: 'admin' })).toBe(0);
      await throttle.failure('admin', '203.0.113.7');
      await throttle.failure('gateway', '203.0.113.7');
      for (let n = 0; n < 4; n += 1) await throttle.refuseIfBlocked('admin', '203.0.113.7');
      expect(await value('writ_throttle_blocked_sources', { scope: 'admin' })).toBe(1);
      expect(await value('writ_throttle_blocked_sources', { scope: 'gateway' })).toBe(1);
      expect(await value('writ_throttle_blocked_sources', { scope: 'oauth' })).toBe(0);
      expect(await value('writ_throttle_memory_refusals_total', { scope: 'admin' })).toBe(4);
      expect(await value('writ_throttle_memory_refusals_total', { scope: 'gateway' })).toBe(0);
      setFailFlush(true);
      await expect(throttle.flush()).rejects.toThrow('connection lost');
      expect(await value('writ_throttle_flush_failures_total')).toBe(1);
      setFailFlush(false);
      await throttle.flush();
      expect(await value('writ_throttle_flush_failures_total')).toBe(1);
    } finally {
      await throttle.onModuleDestroy();
    }
    // A closed app's throttle is no longer read.
    expect(await value('writ_throttle_blocked_sources', { scope: 'admin' })).toBe(0);
    metrics.close();
  });
});
