import { setTimeout as sleep } from 'node:timers/promises';
import { LoadResult, LoadTarget, runClosedLoop, runOpenLoop } from './support/open-loop';
import { round3 } from './support/rounds';
import { BenchServer, startBenchInstance, startBenchServer, statsDelta } from './support/start-bench-server';
import { prepareBodies } from './token-exchange.bench';

/**
 * What one exchange costs at each rate: the token exchange and the minimal baseline, alternated,
 * in an open loop at each given rate, with the server's event-loop utilisation and CPU per
 * request over each phase. With `two`, the exchange at each rate on one instance, then the same
 * rate split over two instances of one deployment (alternated over the rounds).
 *
 *   npm run build, then
 *   WRIT_BENCH_PORT_BASE=23000 node dist/bench/rate-sweep.js [rates=50,200,630] [seconds=6] [two] [rounds=1]
 *
 * Prints one JSON line per phase. See docs/performance.md, "Thirteenth pass".
 */
const FORM = { 'content-type': 'application/x-www-form-urlencoded' };

async function target(server: BenchServer, url: string, count: number): Promise<LoadTarget> {
  return { url, method: 'POST', headers: FORM, nextBody: await prepareBodies(server, count) };
}

/** Runs `targets` at once, `rate` split evenly, and reads `counters` around them. */
async function phase(counters: Array<Pick<BenchServer, 'stats'>>, targets: LoadTarget[], rate: number, seconds: number) {
  const before = await Promise.all(counters.map((each) => each.stats()));
  const results: LoadResult[] = await Promise.all(
    targets.map((each) => runOpenLoop(each, rate / targets.length, { seconds, connections: 64 / targets.length })),
  );
  await sleep(100);
  const after = await Promise.all(counters.map((each) => each.stats()));
  const requests = results.reduce((sum, each) => sum + each.requests, 0);
  const deltas = counters.map((_, index) => statsDelta(before[index], after[index], requests));
  return {
    rate,
    requestsPerSecond: Math.round(results.reduce((sum, each) => sum + each.requestsPerSecond, 0)),
    p50Ms: round3(Math.max(...results.map((each) => each.p50Ms))),
    p99Ms: round3(Math.max(...results.map((each) => each.p99Ms))),
    eventLoopUtilization: deltas.map((delta) => round3(delta.eventLoopUtilization)),
    cpuUsPerRequest: Math.round(deltas.reduce((sum, delta) => sum + delta.cpuUsPerRequest, 0)),
    commitsPerRequest: round3(deltas[0].commitsPerRequest),
    failed: results.reduce((sum, each) => sum + each.errors + each.non2xx, 0),
  };
}

async function main(): Promise<void> {
  const [ratesText = '50,200,630', secondsText = '6', mode = 'one', roundsText = '1'] = process.argv.slice(2);
  const rates = ratesText.split(',').map(Number);
  const seconds = Number(secondsText);
  const rounds = Number(roundsText);
  const base = Number(process.env.WRIT_BENCH_PORT_BASE ?? 23_000);
  const server = await startBenchServer(base);
  const second = mode === 'two' ? await startBenchInstance(server, base + 50) : undefined;
  try {
    const exchangeUrl = `${server.ready.issuer}/oauth2/token`;
    // Warm-up (JIT, pools, caches): not reported.
    await runClosedLoop(await target(server, exchangeUrl, 8_000), { seconds: 3, connections: 32 });
    if (second) await runClosedLoop(await target(server, second.ready.tokenUrl, 8_000), { seconds: 3, connections: 32 });
    for (let round = 0; round < rounds; round += 1) {
      for (const rate of rates) {
        const count = Math.ceil(rate * seconds) + 100;
        if (!second) {
          for (const [name, url] of [
            ['token exchange', exchangeUrl],
            ['minimal exchange', server.ready.minimalExchangeUrl],
          ]) {
            console.log(JSON.stringify({ round, name, ...(await phase([server], [await target(server, url, count)], rate, seconds)) }));
          }
          continue;
        }
        const order = round % 2 === 0 ? ['one', 'two'] : ['two', 'one'];
        for (const instances of order) {
          const result =
            instances === 'one'
              ? await phase([server], [await target(server, exchangeUrl, count)], rate, seconds)
              : await phase(
                  [server, second],
                  [await target(server, exchangeUrl, count / 2), await target(server, second.ready.tokenUrl, count / 2)],
                  rate,
                  seconds,
                );
          console.log(JSON.stringify({ round, name: `token exchange, ${instances === 'one' ? 'one instance' : 'two instances'}`, ...result }));
        }
      }
    }
  } finally {
    await second?.stop();
    await server.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
