import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { importJWK, JWK, SignJWT } from 'jose';
import { payoutInput } from '../policy.bench';
import { LoadResult, LoadTarget, runClosedLoop, runOpenLoop } from '../support/open-loop';

/**
 * A peer's comparable operation, as `bench/peers/peers.sh start` describes it in
 * `~/.cache/writ/tools/peers/state/peers.json`: a token endpoint with a client authenticating by
 * `private_key_jwt` (RFC 7523), or a plain JSON POST (OPA's data API).
 */
export interface PeerOperation {
  system: string;
  operation: string;
  url: string;
  /** `private_key_jwt`: form fields besides the assertion, the client and its private key. */
  form?: Record<string, string>;
  clientId?: string;
  privateJwk?: JWK;
  /** The assertion's audience (Keycloak: the realm issuer; Hydra: the token endpoint). */
  audience?: string;
  /** A subject token to obtain first (token exchange): a client_credentials grant of another client. */
  subjectFrom?: { url: string; clientId: string; audience: string; form: Record<string, string> };
  /** A JSON body (OPA); `"writ-policy-input"` stands for the policy benchmark's input. */
  json?: unknown;
  /** Its processes: `<process>.pid` in the state folder holds their process group (for CPU per request). */
  process?: string;
}

/** One peer's measurement. */
export interface PeerRow {
  system: string;
  operation: string;
  /** Requests per second of each warm-up round, before the measured phases. */
  warmup: number[];
  result: PeerResult;
}

/** Peers measured, and peers skipped or phases failed (with the reason). */
export interface PeersBench {
  rows: PeerRow[];
  skipped: string[];
}

async function assertionBodies(peer: PeerOperation, count: number): Promise<() => string | null> {
  const key = await importJWK(peer.privateJwk!, 'ES256');
  const now = Math.floor(Date.now() / 1000);
  const sign = (clientId: string, audience: string) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', kid: peer.privateJwk!.kid })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(audience)
      .setJti(randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + 295)
      .sign(key);
  const extra: Record<string, string> = {};
  if (peer.subjectFrom) {
    const from = peer.subjectFrom;
    const response = await fetch(from.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        ...from.form,
        client_id: from.clientId,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await sign(from.clientId, from.audience),
      }),
    });
    const body = (await response.json()) as { access_token?: string };
    if (!body.access_token) throw new Error(`${peer.system}: no subject token (${response.status})`);
    extra.subject_token = body.access_token;
  }
  const bodies: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const assertion = await sign(peer.clientId!, peer.audience!);
    bodies.push(
      new URLSearchParams({
        ...peer.form,
        ...extra,
        client_id: peer.clientId!,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }).toString(),
    );
  }
  let cursor = 0;
  return () => (cursor < bodies.length ? bodies[cursor++] : null);
}

async function targetFor(peer: PeerOperation, count: number): Promise<LoadTarget> {
  if (peer.json !== undefined) {
    const body = JSON.stringify(peer.json === 'writ-policy-input' ? { input: payoutInput() } : peer.json);
    return { url: peer.url, method: 'POST', headers: { 'content-type': 'application/json' }, nextBody: () => body };
  }
  return { url: peer.url, method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, nextBody: await assertionBodies(peer, count) };
}

/**
 * One request, checked for what it must return: an access token from a token endpoint, an
 * allowing decision from OPA. Null when it succeeded, otherwise why not. A peer that answers
 * quickly with an error is not measured.
 */
async function probe(peer: PeerOperation): Promise<string | null> {
  const target = await targetFor(peer, 1).catch((error: unknown) => {
    throw new Error(`could not prepare a request: ${error instanceof Error ? error.message : String(error)}`);
  });
  const response = await fetch(peer.url, { method: 'POST', headers: target.headers, body: target.nextBody!() ?? undefined }).catch(() => null);
  if (!response) return 'not reachable';
  const text = await response.text();
  if (response.status !== 200) return `answered ${response.status}: ${text.slice(0, 200)}`;
  const body = JSON.parse(text) as { access_token?: unknown; result?: { allow?: unknown } };
  if (peer.json !== undefined) return body.result?.allow === true ? null : `did not allow the benchmark input: ${text.slice(0, 200)}`;
  return typeof body.access_token === 'string' ? null : `answered 200 without an access token: ${text.slice(0, 200)}`;
}

/**
 * CPU time (user + system, µs) of every process in a peer's process group (`peers.sh` starts
 * each peer as a session leader and keeps its pid), from `/proc`; null when unknown.
 */
function groupCpuUs(pgid: number | undefined): number | null {
  if (!pgid || process.platform !== 'linux') return null;
  const ticksPerSecond = 100; // USER_HZ, 100 on Linux for every architecture Node runs on
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // Fields after the command (which may hold spaces): state ppid pgrp ... utime(14) stime(15).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks * 1e6) / ticksPerSecond;
}

function readPgid(name: string | undefined, stateDir: string): number | undefined {
  if (!name) return undefined;
  try {
    return Number(readFileSync(join(stateDir, `${name}.pid`), 'utf8').trim()) || undefined;
  } catch {
    return undefined;
  }
}

/** A phase's load result with the peer's CPU time per request (all its processes; not its database). */
export type PeerResult = LoadResult & { cpuUsPerRequest?: number };

async function withCpu(pgid: number | undefined, run: () => Promise<LoadResult>): Promise<PeerResult> {
  const before = groupCpuUs(pgid);
  const result = await run();
  const after = groupCpuUs(pgid);
  if (before === null || after === null || !result.requests) return result;
  return { ...result, cpuUsPerRequest: (after - before) / result.requests };
}

/** Requests a closed-loop phase may need: generous, from the last measured rate (bodies are signed beforehand). */
const bodiesFor = (rate: number, seconds: number): number => Math.ceil(Math.max(rate * 2, 500) * seconds) + 100;

/**
 * Loads each running peer's comparable operation like Writ's: a warm-up, maximum throughput
 * (closed loop, 32 connections), then half of it at a constant rate (open loop). The warm-up
 * is a closed loop in rounds of 3 s until at least `WRIT_BENCH_PEER_WARMUP_REQUESTS` (default
 * 10 000) requests were served and two successive rounds agree within 10%, or after
 * `WRIT_BENCH_PEER_WARMUP_ROUNDS` (default 20) rounds: the JVM compiles a method with its
 * optimising compiler after thousands of calls, so Keycloak is slow for tens of seconds.
 * A peer that is not running or whose first request does not succeed is skipped with the
 * reason; a phase where more than 1% of requests failed is reported as failed, not as a result.
 */
export async function benchPeers(options: { durationSeconds: number }): Promise<PeersBench> {
  const stateDir = join(process.env.WRIT_TOOLS_DIR ?? join(homedir(), '.cache', 'writ', 'tools'), 'peers', 'state');
  const file = join(stateDir, 'peers.json');
  if (!existsSync(file)) return { rows: [], skipped: ['no peers running (bash bench/peers/peers.sh install && bash bench/peers/peers.sh start)'] };
  const peers = JSON.parse(readFileSync(file, 'utf8')) as PeerOperation[];
  const rows: PeerRow[] = [];
  const skipped: string[] = [];
  const seconds = options.durationSeconds;
  const maxRounds = Math.max(1, Number(process.env.WRIT_BENCH_PEER_WARMUP_ROUNDS ?? 20));
  const minRequests = Number(process.env.WRIT_BENCH_PEER_WARMUP_REQUESTS ?? 10_000);
  for (const peer of peers) {
    const label = `${peer.system} ${peer.operation}`;
    const failure = await probe(peer).catch((error: unknown) => (error instanceof Error ? error.message : String(error)));
    if (failure) {
      skipped.push(`${label}: ${failure}`);
      continue;
    }
    const pgid = readPgid(peer.process, stateDir);
    const warmup: number[] = [];
    let rate = 0;
    let served = 0;
    for (let round = 0; round < maxRounds; round += 1) {
      const result = await runClosedLoop(await targetFor(peer, bodiesFor(rate, 3)), { seconds: 3, connections: 32 });
      warmup.push(Math.round(result.requestsPerSecond));
      served += result.requests;
      const previous = rate;
      rate = result.requestsPerSecond;
      if (served >= minRequests && round > 0 && Math.abs(rate - previous) <= 0.1 * previous) break;
    }
    console.error(`peers: ${label}, warm-up rounds (req/s): ${warmup.join(', ')}`);
    // Bodies are signed before each phase, outside its CPU window.
    const maxTarget = await targetFor(peer, bodiesFor(rate, seconds));
    const max = await withCpu(pgid, () => runClosedLoop(maxTarget, { seconds, connections: 32 }));
    const half = Math.max(1, Math.floor(max.requestsPerSecond / 2));
    const halfTarget = await targetFor(peer, seconds * half);
    const atHalf = await withCpu(pgid, () => runOpenLoop(halfTarget, half, { seconds, connections: 64 }));
    for (const result of [max, atHalf]) {
      rows.push({ system: peer.system, operation: peer.operation, warmup, result });
      const failed = result.non2xx + result.errors;
      if (failed > 0.01 * (result.requests + result.errors))
        skipped.push(
          `${label}${result.targetRate ? ` @ ${result.targetRate}/s` : ', max'}: ${failed} of ${result.requests + result.errors} requests failed; not a result`,
        );
    }
  }
  return { rows, skipped };
}
