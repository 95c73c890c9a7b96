import { LogRateLimiter } from './log-rate-limiter';

describe('LogRateLimiter', () => {
  it('logs the first occurrence at once, then one per interval per kind with the count left out', () => {
    let now = 1_000_000;
    const limiter = new LogRateLimiter(10_000, () => now);
    expect(limiter.take('ECONNREFUSED')).toEqual({ log: true, suppressed: 0 });
    for (let i = 0; i < 500; i += 1) expect(limiter.take('ECONNREFUSED').log).toBe(false);
    // Another kind is logged at once, on its own schedule.
    expect(limiter.take('57P01')).toEqual({ log: true, suppressed: 0 });
    now += 9_999;
    expect(limiter.take('ECONNREFUSED').log).toBe(false);
    now += 1;
    expect(limiter.take('ECONNREFUSED')).toEqual({ log: true, suppressed: 501 });
    expect(limiter.take('ECONNREFUSED')).toEqual({ log: false, suppressed: 1 });
    now += 60_000;
    expect(limiter.take('ECONNREFUSED')).toEqual({ log: true, suppressed: 1 });
    now += 60_000;
    expect(limiter.take('ECONNREFUSED')).toEqual({ log: true, suppressed: 0 });
  });
});
