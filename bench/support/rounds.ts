import type { PhaseResult } from './phase';

/**
 * Phases compared within one run take turns: each round runs every phase once, the order
 * reversed every other round, and a figure is reported as the median over the rounds. On a
 * box shared with other work (two cores, also running PostgreSQL and the load generator), its
 * load drifts within seconds: two phases run once each, one after the other, can differ by
 * more than what is measured, and a ratio of two such phases moves with the drift. Taking
 * turns spreads the drift over both sides, and the median drops a round that met a hiccup.
 */
export async function inRounds<K extends string>(
  rounds: number,
  phases: ReadonlyArray<readonly [K, () => Promise<PhaseResult>]>,
): Promise<Record<K, PhaseResult[]>> {
  const slices = Object.fromEntries(phases.map(([name]) => [name, [] as PhaseResult[]])) as Record<K, PhaseResult[]>;
  for (let round = 0; round < rounds; round += 1) {
    for (const [name, run] of inRoundOrder(phases, round)) slices[name].push(await run());
  }
  return slices;
}

/** `items` in the order of `round`: reversed every other round, so that none always goes first. */
export function inRoundOrder<T>(items: readonly T[], round: number): T[] {
  return round % 2 === 0 ? [...items] : [...items].reverse();
}

/** The median of `values` (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('the median of nothing');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * The slice whose `by` is the median (the lower middle one for an even count): a whole slice,
 * so that its figures (throughput, latencies, CPU) belong together.
 */
export function medianSlice(slices: readonly PhaseResult[], by: (slice: PhaseResult) => number = (slice) => slice.requestsPerSecond): PhaseResult {
  if (slices.length === 0) throw new RangeError('the median of no slices');
  const sorted = [...slices].sort((a, b) => by(a) - by(b));
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** `of` for each round's pair of slices (`a[i]`, `b[i]`), e.g. a ratio or a difference. */
export function perRound(a: readonly PhaseResult[], b: readonly PhaseResult[], of: (a: PhaseResult, b: PhaseResult) => number): number[] {
  if (a.length !== b.length) throw new RangeError(`rounds differ: ${a.length} and ${b.length}`);
  return a.map((slice, round) => round3(of(slice, b[round])));
}

export function round3(value: number): number {
  return Number(value.toFixed(3));
}
