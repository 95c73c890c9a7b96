import { LatencyHistogram } from './histogram';

describe('LatencyHistogram', () => {
  it('is exact below 64 µs and within 1/64 above', () => {
    const histogram = new LatencyHistogram();
    for (let us = 1; us <= 100_000; us += 1) histogram.record(us);
    expect(histogram.count).toBe(100_000);
    for (const p of [1, 50, 90, 99, 99.9]) {
      const exact = (p / 100) * 100_000;
      const reported = histogram.percentileUs(p);
      expect(reported).toBeGreaterThanOrEqual(exact);
      expect(reported).toBeLessThanOrEqual(exact * (1 + 1 / 64) + 1);
    }
    expect(histogram.percentileUs(100)).toBe(100_000);
  });

  it('keeps sub-millisecond percentiles apart', () => {
    const histogram = new LatencyHistogram();
    for (let index = 0; index < 98; index += 1) histogram.record(250);
    histogram.record(900);
    histogram.record(4200);
    expect(histogram.percentileUs(50)).toBeLessThan(256);
    expect(histogram.percentileUs(99)).toBeGreaterThanOrEqual(900);
    expect(histogram.percentileUs(99)).toBeLessThan(920);
    expect(histogram.max).toBe(4200);
  });

  it('merges counts and reports zero when empty', () => {
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    expect(a.percentileUs(99)).toBe(0);
    a.record(10);
    b.record(1_000_000);
    a.merge(b);
    expect(a.count).toBe(2);
    expect(a.percentileUs(100)).toBe(1_000_000);
    expect(a.meanUs).toBeCloseTo(500_005);
  });
});
