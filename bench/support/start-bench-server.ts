import { ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import { importJWK } from 'jose';
import type { CryptoKey } from 'jose';
import type { ClientKey } from '@writ/testing';
import type { BenchInstanceReady } from './bench-instance';
import type { BenchServerReady, BenchServerStats } from './bench-server';

/** The system under test running in a child process. */
export interface BenchServer {
  ready: BenchServerReady;
  agentKey: ClientKey;
  /** The server's cumulative counters (event loop, commits, CPU); diff two readings with {@link statsDelta}. */
  stats(): Promise<BenchServerStats>;
  stop(): Promise<void>;
}

/** What the server did between two readings, per request served in between. */
export interface ServerDelta {
  /** Event-loop utilisation of the server's main thread over the interval (0-1). */
  eventLoopUtilization: number;
  /** PostgreSQL write transactions (the whole cluster, each a WAL flush) per request. */
  commitsPerRequest: number;
  /** WAL bytes the cluster wrote per request. */
  walBytesPerRequest: number;
  /** Full-page images in that WAL per request. */
  walFullPageImagesPerRequest: number;
  /** CPU time of the server process per request, microseconds (user + system, all threads). */
  cpuUsPerRequest: number;
}

/** Diffs two readings of {@link BenchServer.stats}. */
export function statsDelta(before: BenchServerStats, after: BenchServerStats, requests: number): ServerDelta {
  const active = after.elu.active - before.elu.active;
  const idle = after.elu.idle - before.elu.idle;
  const per = (value: number) => (requests > 0 ? value / requests : 0);
  return {
    eventLoopUtilization: active + idle > 0 ? active / (active + idle) : 0,
    commitsPerRequest: per(after.xactCommit - before.xactCommit),
    walBytesPerRequest: per(after.walBytes - before.walBytes),
    walFullPageImagesPerRequest: per(after.walFullPageImages - before.walFullPageImages),
    cpuUsPerRequest: per(after.cpuUs - before.cpuUs),
  };
}

/** Forks a compiled bench script and waits for its first message. */
export async function forkReady<T>(script: string, args: string[]): Promise<{ child: ChildProcess; message: T }> {
  // WRIT_BENCH_PROFILE=<dir>: the system under test writes a V8 CPU profile there on exit.
  const profile = process.env.WRIT_BENCH_PROFILE;
  const execArgv = profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [];
  const child = fork(join(__dirname, script), args, { stdio: 'inherit', execArgv });
  const message = await new Promise<T>((resolve, reject) => {
    child.once('message', (value) => resolve(value as T));
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
  return { child, message };
}

/** Asks a forked bench process for its cumulative counters. */
export function statsOf(child: ChildProcess): Promise<BenchServerStats> {
  return new Promise<BenchServerStats>((resolve) => {
    const listener = (message: unknown) => {
      if ((message as { type?: string }).type !== 'stats') return;
      child.off('message', listener);
      resolve(message as BenchServerStats);
    };
    child.on('message', listener);
    child.send({ type: 'stats' });
  });
}

/** Stops a forked bench process and waits for it to exit. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.send('stop');
  await exited;
}

/**
 * Starts PostgreSQL, the authorization server and the gateway in their own process (so the
 * load generator does not share their event loop), with a task to exchange against.
 */
export async function startBenchServer(port: number, upstreamUrl?: string): Promise<BenchServer> {
  const { child, message: ready } = await forkReady<BenchServerReady>('bench-server.js', [String(port), ...(upstreamUrl ? [upstreamUrl] : [])]);
  const key = (await importJWK(ready.agentPrivateJwk, 'ES256')) as CryptoKey;
  const agentKey = { privateKey: key, publicJwk: { kid: ready.agentPrivateJwk.kid as string, alg: 'ES256', use: 'sig', kty: 'EC' }, alg: 'ES256' } as ClientKey;
  return { ready, agentKey, stats: () => statsOf(child), stop: () => stopChild(child) };
}

/** A second instance over the bench server's database (see `bench-instance.ts`). */
export interface BenchInstance {
  ready: BenchInstanceReady;
  stats(): Promise<BenchServerStats>;
  stop(): Promise<void>;
}

/** Starts one more instance of the bench server's deployment, on `authPort` and `authPort + 1`. */
export async function startBenchInstance(server: BenchServer, authPort: number): Promise<BenchInstance> {
  const { ready } = server;
  const { child, message } = await forkReady<BenchInstanceReady>('bench-instance.js', [
    String(authPort),
    String(authPort + 1),
    ready.databaseUrl,
    ready.issuer,
    ready.gatewayUrl,
  ]);
  return { ready: message, stats: () => statsOf(child), stop: () => stopChild(child) };
}
