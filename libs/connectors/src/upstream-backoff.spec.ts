import { UPSTREAM_BACKOFF_MAX_SECONDS, UPSTREAM_BACKOFF_STEPS, upstreamBackoffSchedule, upstreamBackoffSeconds } from './upstream-backoff';

describe('upstreamBackoffSeconds', () => {
  it('starts at 5 s and doubles per failure in a row, up to 5 min', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 20, 1000].map((failures) => upstreamBackoffSeconds(failures, 0))).toEqual([5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
  });

  it('takes at most a quarter off at random', () => {
    expect(upstreamBackoffSeconds(1, 0.999999)).toBeGreaterThan(3.75);
    expect(upstreamBackoffSeconds(1, 0.5)).toBe(4.375);
    expect(upstreamBackoffSeconds(10, 1)).toBe(225);
  });

  it('reads a count under one as the first failure, and a random draw outside [0, 1] as its bound', () => {
    expect(upstreamBackoffSeconds(0, 0)).toBe(5);
    expect(upstreamBackoffSeconds(-3, 0)).toBe(5);
    expect(upstreamBackoffSeconds(Number.POSITIVE_INFINITY, 0)).toBe(300);
    expect(upstreamBackoffSeconds(1, -1)).toBe(5);
    expect(upstreamBackoffSeconds(1, 2)).toBe(3.75);
  });

  it('has a schedule whose last entry is the cap (it stands for every later failure)', () => {
    const schedule = upstreamBackoffSchedule(0);
    expect(schedule).toHaveLength(UPSTREAM_BACKOFF_STEPS);
    expect(schedule[schedule.length - 1]).toBe(UPSTREAM_BACKOFF_MAX_SECONDS);
    expect(schedule[schedule.length - 2]).toBeLessThan(UPSTREAM_BACKOFF_MAX_SECONDS);
    expect(upstreamBackoffSchedule(0.5)).toEqual(schedule.map((seconds) => seconds * 0.875));
  });
});
