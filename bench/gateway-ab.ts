import { readCredential } from './gateway.bench';
import { printSummary, withTrees } from './support/ab-trees';
import { inRoundOrder, round3 } from './support/rounds';
import { LoadTarget, runClosedLoop, runOpenLoop } from './support/open-loop';
import { measurePhase } from './support/phase';

/**
 * The gateway of this tree against another tree's (e.g. `main`'s worktree, built), both up at
 * once over the same upstream, the load alternated between them in short slices (the order
 * flipped every round), so that both see the same machine: on a box shared with other work,
 * runs taken minutes apart differ more than the change being measured.
 *
 *   npm run build (in both trees; or `.` for this tree again, with WRIT_AB_OTHER_ENV='NAME=value ...'
 *   for the other server only, e.g. WRIT_ECDSA=thread-pool), then
 *   WRIT_BENCH_PORT_BASE=22000 node dist/bench/gateway-ab.js /work/main [rounds=8] [seconds=2] [rate=500]
 *
 * Each round and tree: the plain proxy and the gateway at their maximum (closed loop, 32
 * connections), then both at `rate`/s (open loop). Prints one JSON line per slice, then the
 * median and range per tree. The other tree's ports are this base + 500.
 */
interface Slice {
  round: number;
  tree: string;
  proxyMax: number;
  gatewayMax: number;
  ratio: number;
  cpuUsAtMax: number;
  proxyCpuUsAtMax: number;
  walBytesAtMax: number;
  /** Full-page images per call at the maximum: WAL that depends on checkpoint timing, not on the code. */
  fullPagesAtMax: number;
  cpuUsAtRate: number;
  commitsAtRate: number;
  addedP50Ms: number;
  addedP99Ms: number;
  failed: number;
}

async function main(): Promise<void> {
  const [other, roundsText = '8', secondsText = '2', rateText = '500'] = process.argv.slice(2);
  if (!other) throw new Error('usage: gateway-ab.js <other tree> [rounds] [seconds] [rate]');
  const rounds = Number(roundsText);
  const seconds = Number(secondsText);
  const rate = Number(rateText);
  await withTrees(other, Number(process.env.WRIT_BENCH_PORT_BASE ?? 14_000), async (trees) => {
    const targets = new Map<string, { gateway: LoadTarget; proxy: LoadTarget }>();
    for (const { name, server } of trees) {
      const tokens: string[] = [];
      for (const taskToken of server.ready.taskTokens) tokens.push(await readCredential(server, taskToken));
      let turn = 0;
      const target = {
        gateway: {
          url: `${server.ready.gatewayUrl}/connectors/payments/v1/balance`,
          nextHeaders: () => ({ authorization: `Bearer ${tokens[turn++ % tokens.length]}` }),
        },
        proxy: { url: `${server.ready.plainProxyUrl}/connectors/payments/v1/balance` },
      };
      targets.set(name, target);
      await runClosedLoop(target.gateway, { seconds: 3, connections: 32 });
      await runClosedLoop(target.proxy, { seconds: 1, connections: 32 });
    }
    const slices: Slice[] = [];
    for (let round = 0; round < rounds; round += 1) {
      for (const { name, server } of inRoundOrder(trees, round)) {
        const target = targets.get(name)!;
        const proxyMax = await measurePhase(server, () => runClosedLoop(target.proxy, { seconds, connections: 32 }));
        const gatewayMax = await measurePhase(server, () => runClosedLoop(target.gateway, { seconds, connections: 32 }));
        const proxyAtRate = await measurePhase(server, () => runOpenLoop(target.proxy, rate, { seconds, connections: 64 }));
        const gatewayAtRate = await measurePhase(server, () => runOpenLoop(target.gateway, rate, { seconds, connections: 64 }));
        const slice: Slice = {
          round,
          tree: name,
          proxyMax: Math.round(proxyMax.requestsPerSecond),
          gatewayMax: Math.round(gatewayMax.requestsPerSecond),
          ratio: round3(gatewayMax.requestsPerSecond / proxyMax.requestsPerSecond),
          cpuUsAtMax: Math.round(gatewayMax.cpuUsPerRequest),
          proxyCpuUsAtMax: Math.round(proxyMax.cpuUsPerRequest),
          walBytesAtMax: Math.round(gatewayMax.walBytesPerRequest),
          fullPagesAtMax: round3(gatewayMax.walFullPageImagesPerRequest),
          cpuUsAtRate: Math.round(gatewayAtRate.cpuUsPerRequest),
          commitsAtRate: round3(gatewayAtRate.commitsPerRequest),
          addedP50Ms: round3(gatewayAtRate.p50Ms - proxyAtRate.p50Ms),
          addedP99Ms: round3(gatewayAtRate.p99Ms - proxyAtRate.p99Ms),
          failed: gatewayMax.errors + gatewayMax.non2xx + gatewayAtRate.errors + gatewayAtRate.non2xx,
        };
        slices.push(slice);
        console.log(JSON.stringify(slice));
      }
    }
    printSummary(trees, slices, [
      'proxyMax',
      'gatewayMax',
      'ratio',
      'cpuUsAtMax',
      'proxyCpuUsAtMax',
      'walBytesAtMax',
      'fullPagesAtMax',
      'cpuUsAtRate',
      'commitsAtRate',
      'addedP50Ms',
      'addedP99Ms',
      'failed',
    ]);
  });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
