import { setTimeout as sleep } from 'node:timers/promises';
import { readCredential } from './gateway.bench';
import { LoadResult, LoadTarget, runClosedLoop } from './support/open-loop';
import { rounded } from './support/phase';
import { BenchInstance, BenchServer, startBenchInstance, statsDelta } from './support/start-bench-server';
import { prepareBodies } from './token-exchange.bench';

/** Maximum throughput of one load on one instance, then spread over two instances of one deployment. */
export interface ScaleRow {
  one_instance: LoadResult & { eventLoopUtilization: number; cpuUsPerRequest: number };
  /** Both instances loaded at once, half the connections each; p50/p99 are the worse instance's. */
  two_instances: LoadResult & { eventLoopUtilization: number[]; cpuUsPerRequest: number };
  /** Two instances' req/s over one instance's. */
  ratio: number;
}

/** The scaling benchmark: token exchange and gateway, one instance and two over one PostgreSQL. */
export interface ScaleBench {
  cpus: number;
  token_exchange: ScaleRow;
  gateway: ScaleRow;
}

type Counters = { stats(): ReturnType<BenchServer['stats']> };

/** Runs `loads` at once (one per instance) and reads each instance's counters around them. */
async function measure(instances: Counters[], loads: Array<() => Promise<LoadResult>>) {
  const before = await Promise.all(instances.map((instance) => instance.stats()));
  const results = await Promise.all(loads.map((load) => load()));
  await sleep(100);
  const after = await Promise.all(instances.map((instance) => instance.stats()));
  const requests = results.reduce((sum, result) => sum + result.requests, 0);
  const deltas = instances.map((_, index) => statsDelta(before[index], after[index], requests));
  const worse = (pick: (result: LoadResult) => number) => Math.max(...results.map(pick));
  const result: LoadResult = {
    requestsPerSecond: results.reduce((sum, each) => sum + each.requestsPerSecond, 0),
    targetRate: null,
    p50Ms: worse((each) => each.p50Ms),
    p90Ms: worse((each) => each.p90Ms),
    p99Ms: worse((each) => each.p99Ms),
    maxMs: worse((each) => each.maxMs),
    requests,
    non2xx: results.reduce((sum, each) => sum + each.non2xx, 0),
    errors: results.reduce((sum, each) => sum + each.errors, 0),
    late: 0,
  };
  // Every instance's CPU over every request served; the commits are the shared cluster's.
  return {
    result,
    elu: deltas.map((delta) => Number(delta.eventLoopUtilization.toFixed(3))),
    cpuUsPerRequest: deltas.reduce((sum, delta) => sum + delta.cpuUsPerRequest, 0),
  };
}

async function scaleRow(
  server: BenchServer,
  second: BenchInstance,
  targets: (count: number) => Promise<[LoadTarget, LoadTarget]>,
  seconds: number,
  connections: number,
): Promise<ScaleRow> {
  const [warmFirst, warmSecond] = await targets(4000);
  await Promise.all([
    runClosedLoop(warmFirst, { seconds: 2, connections: connections / 2 }),
    runClosedLoop(warmSecond, { seconds: 2, connections: connections / 2 }),
  ]);
  const [alone] = await targets(seconds * 4000);
  const one = await measure([server], [() => runClosedLoop(alone, { seconds, connections })]);
  const [first, other] = await targets(seconds * 4000);
  const two = await measure(
    [server, second],
    [() => runClosedLoop(first, { seconds, connections: connections / 2 }), () => runClosedLoop(other, { seconds, connections: connections / 2 })],
  );
  return {
    one_instance: rounded({ ...one.result, eventLoopUtilization: one.elu[0], cpuUsPerRequest: one.cpuUsPerRequest }),
    two_instances: rounded({ ...two.result, eventLoopUtilization: two.elu, cpuUsPerRequest: two.cpuUsPerRequest }),
    ratio: Number((two.result.requestsPerSecond / one.result.requestsPerSecond).toFixed(3)),
  };
}

/**
 * Starts a second instance over the bench server's database (same issuer, gateway URL, keys
 * and policy, as behind a load balancer) and measures the token exchange and the gateway at
 * their maximum on one instance, then on both at once, half the connections each.
 */
export async function benchScale(server: BenchServer, options: { durationSeconds: number; port: number; cpus: number }): Promise<ScaleBench> {
  const seconds = options.durationSeconds;
  const connections = 32;
  const second = await startBenchInstance(server, options.port);
  try {
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const exchange = await scaleRow(
      server,
      second,
      async (count) => {
        // Half the bodies each: every body is a unique client assertion, spent once on either instance.
        const [a, b] = [await prepareBodies(server, count), await prepareBodies(server, count)];
        return [
          { url: `${server.ready.issuer}/oauth2/token`, method: 'POST', headers: form, nextBody: a },
          { url: second.ready.tokenUrl, method: 'POST', headers: form, nextBody: b },
        ];
      },
      seconds,
      connections,
    );
    const tokens: string[] = [];
    for (const taskToken of server.ready.taskTokens) tokens.push(await readCredential(server, taskToken));
    let turn = 0;
    const nextHeaders = () => ({ authorization: `Bearer ${tokens[turn++ % tokens.length]}` });
    const gateway = await scaleRow(
      server,
      second,
      async () => [
        { url: `${server.ready.gatewayUrl}/connectors/payments/v1/balance`, nextHeaders },
        { url: `${second.ready.gatewayUrl}/connectors/payments/v1/balance`, nextHeaders },
      ],
      seconds,
      connections,
    );
    return { cpus: options.cpus, token_exchange: exchange, gateway };
  } finally {
    await second.stop();
  }
}
