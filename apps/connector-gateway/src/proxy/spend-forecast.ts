/** Most credentials whose last spend a forecast remembers (the oldest is forgotten first). */
const MAX_CREDENTIALS = 10_000;

/**
 * What this instance expects the next spend of a use-limited credential to leave: the uses its
 * last spend here left (none seen: a fresh credential), plus its spends of it still in flight,
 * plus this one. Only an expectation: the spending statement decides, and a batch whose spends
 * leave other counts (another instance spent the credential meanwhile, it was revoked) is
 * rolled back and written again with the real ones (`AuditService`'s one-message batches).
 */
export class SpendForecast {
  private readonly seen = new Map<string, number>();
  private readonly inFlight = new Map<string, number>();

  constructor(private readonly maxCredentials = MAX_CREDENTIALS) {}

  /** The uses the credential should count once this spend is done; counts it as in flight until {@link settle}. */
  next(jti: string): number {
    const pending = (this.inFlight.get(jti) ?? 0) + 1;
    this.inFlight.set(jti, pending);
    return (this.seen.get(jti) ?? 0) + pending;
  }

  /** A spend counted by {@link next} is over: `uses` is what it left (undefined: it spent nothing, or failed). */
  settle(jti: string, uses: number | undefined): void {
    const pending = (this.inFlight.get(jti) ?? 1) - 1;
    if (pending > 0) this.inFlight.set(jti, pending);
    else this.inFlight.delete(jti);
    if (uses === undefined || uses <= (this.seen.get(jti) ?? 0)) return;
    this.seen.delete(jti);
    this.seen.set(jti, uses);
    if (this.seen.size > this.maxCredentials) this.seen.delete(this.seen.keys().next().value!);
  }
}
