import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
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
}

/** One peer's measurement. */
export interface PeerRow {
  system: string;
  operation: string;
  result: LoadResult;
}

/** Peers measured and peers skipped (not installed or not running). */
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
 * Loads each running peer's comparable operation like Writ's: maximum throughput (closed
 * loop, 32 connections), then half of it at a constant rate (open loop). A peer that is not
 * installed, not running or refuses the first request is skipped with the reason.
 */
export async function benchPeers(options: { durationSeconds: number }): Promise<PeersBench> {
  const file = join(process.env.WRIT_TOOLS_DIR ?? join(homedir(), '.cache', 'writ', 'tools'), 'peers', 'state', 'peers.json');
  if (!existsSync(file)) return { rows: [], skipped: ['no peers running (bash bench/peers/peers.sh install && bash bench/peers/peers.sh start)'] };
  const peers = JSON.parse(readFileSync(file, 'utf8')) as PeerOperation[];
  const rows: PeerRow[] = [];
  const skipped: string[] = [];
  const seconds = options.durationSeconds;
  for (const peer of peers) {
    const probe = await targetFor(peer, 1).catch(() => null);
    if (!probe) {
      skipped.push(`${peer.system} ${peer.operation}: could not prepare a request`);
      continue;
    }
    const status = await fetch(peer.url, { method: 'POST', headers: probe.headers, body: probe.nextBody!() ?? undefined }).then(
      (response) => response.status,
      () => 0,
    );
    if (status !== 200) {
      skipped.push(`${peer.system} ${peer.operation}: ${status === 0 ? 'not reachable' : `answered ${status}`}`);
      continue;
    }
    await runClosedLoop(await targetFor(peer, 4000), { seconds: 3, connections: 32 });
    const max = await runClosedLoop(await targetFor(peer, seconds * 4000), { seconds, connections: 32 });
    const half = Math.max(1, Math.floor(max.requestsPerSecond / 2));
    const atHalf = await runOpenLoop(await targetFor(peer, seconds * half), half, { seconds, connections: 64 });
    rows.push({ system: peer.system, operation: peer.operation, result: max }, { system: peer.system, operation: peer.operation, result: atHalf });
  }
  return { rows, skipped };
}
