import { ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import { importJWK } from 'jose';
import type { CryptoKey } from 'jose';
import type { ClientKey } from '@writ/testing';
import type { BenchServerReady } from './bench-server';

/** The system under test running in a child process. */
export interface BenchServer {
  ready: BenchServerReady;
  agentKey: ClientKey;
  stop(): Promise<void>;
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
  return { ready, agentKey, stop: () => stopChild(child) };
}
