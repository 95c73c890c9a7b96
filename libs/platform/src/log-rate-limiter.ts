/** What to do with one occurrence of a rate-limited log line. */
export interface LogDecision {
  /** Log this occurrence now. */
  readonly log: boolean;
  /** Occurrences of the same kind left unlogged since the last line (to be said in this one). */
  readonly suppressed: number;
}

/** Most kinds remembered at once (a kind is a bounded value, e.g. an error code; this only caps a surprise). */
const MAX_KINDS = 1_000;

/**
 * Limits a log line that every request of an outage would write: the first occurrence of a kind
 * is logged at once, then at most one line per `intervalMs` per kind, which says how many
 * occurrences were left unlogged since the previous one. The clock is injectable for tests.
 */
export class LogRateLimiter {
  private readonly kinds = new Map<string, { lastLogged: number; suppressed: number }>();

  constructor(
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whether to log this occurrence of `kind`, and how many earlier ones went unlogged. */
  take(kind: string): LogDecision {
    const now = this.now();
    const state = this.kinds.get(kind);
    if (state && now - state.lastLogged < this.intervalMs) {
      state.suppressed += 1;
      return { log: false, suppressed: state.suppressed };
    }
    const suppressed = state?.suppressed ?? 0;
    if (!state && this.kinds.size >= MAX_KINDS) this.kinds.clear();
    this.kinds.set(kind, { lastLogged: now, suppressed: 0 });
    return { log: true, suppressed };
  }
}
