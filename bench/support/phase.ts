import { setTimeout as sleep } from 'node:timers/promises';
import type { LoadResult } from './open-loop';
import { BenchServer, ServerDelta, statsDelta } from './start-bench-server';

/** A load phase's result with what the server process did meanwhile. */
export type PhaseResult = LoadResult & ServerDelta;

/**
 * Runs one load phase against the bench server and reads its counters around it: event-loop
 * utilisation, CPU and write transactions over the phase itself (in-flight background work
 * settles for 100 ms before the second reading).
 */
export async function measurePhase(server: BenchServer, run: () => Promise<LoadResult>): Promise<PhaseResult> {
  const before = await server.stats();
  const result = await run();
  await sleep(100);
  const after = await server.stats();
  return { ...result, ...statsDelta(before, after, result.requests) };
}

/** Rounds the numbers of a result for the JSON file and the table. */
export function rounded<T extends object>(result: T): T {
  return Object.fromEntries(
    Object.entries(result).map(([key, value]) => [key, typeof value === 'number' && !Number.isInteger(value) ? Number(value.toFixed(3)) : value]),
  ) as T;
}
