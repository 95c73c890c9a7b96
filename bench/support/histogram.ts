/**
 * A log-linear latency histogram with microsecond resolution (HDR style: 2 significant
 * digits per power of two, so every recorded value is within 1/64 of its bucket), in a
 * fixed array: recording is O(1) and allocation-free, percentiles are exact to the bucket.
 * Autocannon reports whole milliseconds; exchanges that take 3 ms need better.
 */
export class LatencyHistogram {
  /** Buckets per power of two: the relative error of a reported value is at most 1/SUB. */
  private static readonly SUB = 64;
  /** Powers of two covered: 2^26 µs ≈ 67 s, beyond any bounded load phase. */
  private static readonly OCTAVES = 27;
  private readonly counts = new Float64Array(LatencyHistogram.SUB * LatencyHistogram.OCTAVES);
  private total = 0;
  private maxUs = 0;
  private sumUs = 0;

  /** Records one latency, in microseconds (fractions kept in the sum, not the bucket). */
  record(us: number): void {
    const value = Math.max(0, us);
    this.counts[LatencyHistogram.indexOf(value)] += 1;
    this.total += 1;
    this.sumUs += value;
    if (value > this.maxUs) this.maxUs = value;
  }

  /** How many values were recorded. */
  get count(): number {
    return this.total;
  }

  /** The arithmetic mean in microseconds (0 when empty). */
  get meanUs(): number {
    return this.total ? this.sumUs / this.total : 0;
  }

  /** The largest value recorded, in microseconds. */
  get max(): number {
    return this.maxUs;
  }

  /** The value at percentile `p` (0-100), in microseconds: the upper edge of its bucket, capped at the max. */
  percentileUs(p: number): number {
    if (this.total === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.total));
    let seen = 0;
    for (let index = 0; index < this.counts.length; index += 1) {
      seen += this.counts[index];
      if (seen >= rank) return Math.min(this.maxUs, LatencyHistogram.upperEdge(index));
    }
    return this.maxUs;
  }

  /** Adds another histogram's counts to this one. */
  merge(other: LatencyHistogram): void {
    for (let index = 0; index < this.counts.length; index += 1) this.counts[index] += other.counts[index];
    this.total += other.total;
    this.sumUs += other.sumUs;
    this.maxUs = Math.max(this.maxUs, other.maxUs);
  }

  private static indexOf(us: number): number {
    const sub = LatencyHistogram.SUB;
    if (us < sub) return Math.floor(us);
    const octave = Math.floor(Math.log2(us / sub)) + 1;
    const width = 2 ** (octave - 1);
    const index = octave * sub + Math.min(sub - 1, Math.floor((us - sub * width) / width));
    return Math.min(index, LatencyHistogram.SUB * LatencyHistogram.OCTAVES - 1);
  }

  private static upperEdge(index: number): number {
    const sub = LatencyHistogram.SUB;
    if (index < sub) return index + 1;
    const octave = Math.floor(index / sub);
    const width = 2 ** (octave - 1);
    return sub * width + ((index % sub) + 1) * width;
  }
}
