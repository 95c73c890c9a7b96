import { prepareBodies } from './token-exchange.bench';
import { printSummary, withTrees } from './support/ab-trees';
import { inRoundOrder, round3 } from './support/rounds';
import { LoadTarget, runClosedLoop, runOpenLoop } from './support/open-loop';
import { measurePhase } from './support/phase';
import type { BenchServer } from './support/start-bench-server';

/**
 * The token exchange of this tree against another tree's (e.g. `main`'s worktree, built), both
 * up at once, the load alternated between them in slices (the order flipped every round): see
 * `support/ab-trees.ts`.
 *
 *   npm run build (in both trees; or `.` for this tree again, with WRIT_AB_OTHER_ENV='NAME=value ...'
 *   for the other server only, e.g. WRIT_ECDSA=thread-pool), then
 *   WRIT_BENCH_PORT_BASE=22000 node dist/bench/exchange-ab.js /work/main [rounds=6] [seconds=6] [rate=700]
 *
 * Each round and tree: the exchange at its maximum (closed loop, 32 connections), then at
 * `rate`/s (open loop; 0 skips it). Every request carries a client assertion signed for it
 * just before its slice, spread over the bench's tasks. Prints one JSON line per slice, then
 * the median and range per tree.
 */
interface Slice {
  round: number;
  tree: string;
  max: number;
  cpuUsAtMax: number;
  eluAtMax: number;
  walBytesAtMax: number;
  fullPagesAtMax: number;
  p50MsAtRate: number;
  p99MsAtRate: number;
  cpuUsAtRate: number;
  failed: number;
}

/** Bodies enough for `seconds` at up to `rate`/s. */
async function target(server: BenchServer, rate: number, seconds: number): Promise<LoadTarget> {
  return {
    url: `${server.ready.issuer}/oauth2/token`,
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    nextBody: await prepareBodies(server, Math.ceil(rate * seconds) + 100),
  };
}

async function main(): Promise<void> {
  const [other, roundsText = '6', secondsText = '6', rateText = '700'] = process.argv.slice(2);
  if (!other) throw new Error('usage: exchange-ab.js <other tree> [rounds] [seconds] [rate]');
  const rounds = Number(roundsText);
  const seconds = Number(secondsText);
  const rate = Number(rateText);
  // The most a closed loop of 32 connections could ask of one instance here.
  const ceiling = 4_000;
  await withTrees(other, Number(process.env.WRIT_BENCH_PORT_BASE ?? 14_000), async (trees) => {
    for (const { server } of trees) await runClosedLoop(await target(server, ceiling, 3), { seconds: 3, connections: 32 });
    const slices: Slice[] = [];
    for (let round = 0; round < rounds; round += 1) {
      for (const { name, server } of inRoundOrder(trees, round)) {
        const atMax = await target(server, ceiling, seconds);
        const max = await measurePhase(server, () => runClosedLoop(atMax, { seconds, connections: 32 }));
        const atRate = rate > 0 ? await target(server, rate, seconds) : undefined;
        const paced = atRate ? await measurePhase(server, () => runOpenLoop(atRate, rate, { seconds, connections: 64 })) : undefined;
        const slice: Slice = {
          round,
          tree: name,
          max: Math.round(max.requestsPerSecond),
          cpuUsAtMax: Math.round(max.cpuUsPerRequest),
          eluAtMax: round3(max.eventLoopUtilization),
          walBytesAtMax: Math.round(max.walBytesPerRequest),
          fullPagesAtMax: round3(max.walFullPageImagesPerRequest),
          p50MsAtRate: paced ? round3(paced.p50Ms) : 0,
          p99MsAtRate: paced ? round3(paced.p99Ms) : 0,
          cpuUsAtRate: paced ? Math.round(paced.cpuUsPerRequest) : 0,
          failed: max.errors + max.non2xx + (paced ? paced.errors + paced.non2xx : 0),
        };
        slices.push(slice);
        console.log(JSON.stringify(slice));
      }
    }
    printSummary(trees, slices, ['max', 'cpuUsAtMax', 'eluAtMax', 'walBytesAtMax', 'fullPagesAtMax', 'p50MsAtRate', 'p99MsAtRate', 'cpuUsAtRate', 'failed']);
  });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
