/**
 * Loopback ports of the bench's processes, from `WRIT_BENCH_PORT_BASE` (default 14000) so
 * that two runs on one machine do not collide: Writ's authorization server at the base, its
 * gateway at +1, the audit benchmark's services at +10..+12, the baselines at +5 and +6,
 * the mock upstream at +20, a second instance (scaling benchmark) at +40 and +41.
 */
const base = Number(process.env.WRIT_BENCH_PORT_BASE ?? 14_000);

/** See the module comment. */
export const BENCH_PORTS = {
  writ: base,
  minimalExchange: base + 5,
  plainProxy: base + 6,
  audit: { auth: base + 10, gateway: base + 11, admin: base + 12 },
  upstream: base + 20,
  secondInstance: base + 40,
} as const;
