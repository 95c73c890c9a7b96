import { join, resolve } from 'node:path';
import { median, round3 } from './rounds';
import { BenchServer, forkReady, startBenchServer, stopChild } from './start-bench-server';

/** One tree of an A/B comparison: this one (`this`) or another built tree (its path). */
export interface AbTree {
  name: string;
  server: BenchServer;
}

interface StartModule {
  startBenchServer: typeof startBenchServer;
}

/** `WRIT_AB_OTHER_ENV` (`NAME=value` pairs separated by spaces): settings of the other tree's server only. */
function otherEnv(): Record<string, string> {
  const pairs = (process.env.WRIT_AB_OTHER_ENV ?? '').split(' ').filter(Boolean);
  return Object.fromEntries(
    pairs.map((pair) => {
      const at = pair.indexOf('=');
      if (at < 1) throw new Error(`WRIT_AB_OTHER_ENV: "${pair}" is not NAME=value`);
      return [pair.slice(0, at), pair.slice(at + 1)];
    }),
  );
}

/**
 * Starts this tree's bench server and `other`'s (a built tree: `npm run build` there; `.` for
 * this one again, told apart by `WRIT_AB_OTHER_ENV`), both up at once over one upstream, so that
 * both see the same machine while the load alternates between them: on a box shared with other
 * work, runs taken minutes apart differ more than a change being measured. `other`'s ports are
 * `base` + 500. Stops everything after `run`.
 */
export async function withTrees(other: string, base: number, run: (trees: AbTree[]) => Promise<void>): Promise<void> {
  const otherModule = (await import(join(resolve(other), 'dist/bench/support/start-bench-server.js'))) as StartModule;
  const env = otherEnv();
  const label = [other, ...Object.entries(env).map(([name, value]) => `${name}=${value}`)].join(' ');
  const starts = [
    { name: 'this', base, env: {}, start: startBenchServer },
    { name: label, base: base + 500, env, start: otherModule.startBenchServer },
  ];
  const upstream = await forkReady<{ url: string }>('upstream-server.js', [String(base + 20)]);
  const trees: AbTree[] = [];
  try {
    for (const tree of starts) {
      // The bench server reads its ports and settings from the environment it is forked with.
      const saved = { ...process.env };
      Object.assign(process.env, tree.env, { WRIT_BENCH_PORT_BASE: String(tree.base) });
      try {
        trees.push({ name: tree.name, server: await tree.start(tree.base, upstream.message.url) });
      } finally {
        for (const name of [...Object.keys(tree.env), 'WRIT_BENCH_PORT_BASE']) if (saved[name] === undefined) delete process.env[name];
        Object.assign(process.env, saved);
      }
    }
    await run(trees);
  } finally {
    for (const tree of trees) await tree.server.stop();
    await stopChild(upstream.child);
  }
}

/** Prints, per tree, the median and range of each numeric field of its slices. */
export function printSummary<S extends { tree: string }>(trees: AbTree[], slices: S[], keys: ReadonlyArray<keyof S & string>): void {
  for (const tree of trees) {
    const mine = slices.filter((slice) => slice.tree === tree.name);
    const summary: Record<string, string> = {};
    for (const key of keys) {
      const values = mine.map((slice) => Number(slice[key]));
      summary[key] = `${round3(median(values))} (${Math.min(...values)} – ${Math.max(...values)})`;
    }
    console.log(`${tree.name}: ${JSON.stringify(summary)}`);
  }
}
