import type { PhaseResult } from './phase';
import { inRoundOrder, inRounds, median, medianSlice, perRound } from './rounds';

const slice = (requestsPerSecond: number, p99Ms = 1): PhaseResult =>
  ({ requestsPerSecond, p99Ms, p50Ms: 0, p90Ms: 0, maxMs: 0, targetRate: null, requests: 0, non2xx: 0, errors: 0, late: 0 }) as PhaseResult;

describe('bench rounds', () => {
  it('runs every phase once a round, the order reversed every other round', async () => {
    const order: string[] = [];
    const phase = (name: string) => async () => {
      order.push(name);
      return slice(order.length);
    };
    const slices = await inRounds(3, [
      ['a', phase('a')],
      ['b', phase('b')],
      ['c', phase('c')],
    ]);
    expect(order).toEqual(['a', 'b', 'c', 'c', 'b', 'a', 'a', 'b', 'c']);
    expect(slices.a.map((s) => s.requestsPerSecond)).toEqual([1, 6, 7]);
    expect(slices.c.map((s) => s.requestsPerSecond)).toEqual([3, 4, 9]);
    expect(inRoundOrder([1, 2], 1)).toEqual([2, 1]);
  });

  it('takes medians of values and whole slices, and pairs rounds', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(() => median([])).toThrow(RangeError);
    const slices = [slice(300, 9), slice(100, 50), slice(200, 2), slice(400, 1)];
    // The lower middle slice for an even count, by throughput or by p99: a slice that was measured.
    expect(medianSlice(slices)).toBe(slices[2]);
    expect(medianSlice(slices, (s) => s.p99Ms)).toBe(slices[2]);
    expect(medianSlice(slices.slice(0, 3))).toBe(slices[2]);
    expect(perRound([slice(1), slice(2)], [slice(4), slice(3)], (a, b) => a.requestsPerSecond / b.requestsPerSecond)).toEqual([0.25, 0.667]);
    expect(() => perRound([slice(1)], [], () => 0)).toThrow(RangeError);
  });
});
