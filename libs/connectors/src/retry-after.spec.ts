import { MAX_UPSTREAM_RETRY_AFTER_SECONDS, parseHttpDate, parseRetryAfter, upstreamRetryAfter } from './retry-after';

const NOW = Date.UTC(2026, 11, 1, 0, 0, 0); // Tue, 01 Dec 2026 00:00:00 GMT

describe('Retry-After (RFC 9110 section 10.2.3)', () => {
  it.each([
    ['0', 0],
    ['120', 120],
    [' 7\t', 7],
    ['Tue, 01 Dec 2026 00:10:00 GMT', 600],
    ['Tuesday, 01-Dec-26 00:10:00 GMT', 600],
    ['Tue Dec  1 00:10:00 2026', 600],
    ['Tue, 01 Dec 2026 00:00:00 GMT', 0],
    ['Mon, 30 Nov 2026 23:00:00 GMT', 0],
    ['Tue, 01 Dec 2026 00:00:00 GMT', 0],
  ])('reads %j as %d s', (value, seconds) => {
    expect(parseRetryAfter(value, NOW)).toBe(seconds);
  });

  it.each([
    '',
    '-5',
    '+5',
    '1.5',
    '1e3',
    '0x10',
    '120, 120',
    'soon',
    'Wed, 01 Dec 2026 00:10:00 GMT', // the wrong day name
    'Tue, 31 Nov 2026 00:10:00 GMT', // no such date
    'Tue, 01 Dec 2026 24:00:00 GMT',
    'Tue, 01 Dec 2026 00:10:00 UTC',
    'Tue, 01 Dec 2026 00:10:00 +0000',
    'Tue, 1 Dec 2026 00:10:00 GMT',
    '2026-12-01T00:10:00Z',
  ])('ignores %j', (value) => {
    expect(parseRetryAfter(value, NOW)).toBeUndefined();
  });

  it('ignores several values and an absent header', () => {
    expect(parseRetryAfter(['10', '20'], NOW)).toBeUndefined();
    expect(parseRetryAfter(null, NOW)).toBeUndefined();
    expect(parseRetryAfter(undefined, NOW)).toBeUndefined();
  });

  it('reads a two-digit rfc850 year more than 50 years ahead as the past century', () => {
    expect(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', NOW)).toBe(Date.UTC(1994, 10, 6, 8, 49, 37));
  });

  it('is heeded only on 429 and 503, capped at an hour', () => {
    expect(upstreamRetryAfter(429, '30', NOW)).toBe(30);
    expect(upstreamRetryAfter(503, '30', NOW)).toBe(30);
    expect(upstreamRetryAfter(500, '30', NOW)).toBeUndefined();
    expect(upstreamRetryAfter(200, '30', NOW)).toBeUndefined();
    expect(upstreamRetryAfter(503, '99999999999999999999', NOW)).toBe(MAX_UPSTREAM_RETRY_AFTER_SECONDS);
    expect(upstreamRetryAfter(503, 'Fri, 01 Jan 2100 00:00:00 GMT', NOW)).toBe(MAX_UPSTREAM_RETRY_AFTER_SECONDS);
    expect(upstreamRetryAfter(503, 'garbage', NOW)).toBeUndefined();
  });
});
