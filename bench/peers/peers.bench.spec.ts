import { createServer, Server } from 'node:http';
import { AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import { benchPeers, PeerOperation } from './peers.bench';

/** A peer that answers every request (or every one after the first) with the same status and body, and counts them. */
async function fakePeer(
  status: number,
  body: unknown,
  after?: { status: number; body: unknown },
): Promise<{ url: string; server: Server; requests: () => number }> {
  let requests = 0;
  const server = createServer((request, response) => {
    requests += 1;
    const answer = after && requests > 1 ? after : { status, body };
    request.resume().on('end', () => response.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`, server, requests: () => requests };
}

describe('benchPeers', () => {
  let tools: string;
  const previous = process.env.WRIT_TOOLS_DIR;

  beforeEach(() => {
    tools = mkdtempSync(join(tmpdir(), 'writ-peers-'));
    process.env.WRIT_TOOLS_DIR = tools;
    // The bench prints each warm-up on stderr; the test reads its results, not its progress.
    jest.spyOn(console, 'error').mockImplementation(() => undefined);
  });

  afterEach(() => {
    jest.restoreAllMocks();
    if (previous === undefined) delete process.env.WRIT_TOOLS_DIR;
    else process.env.WRIT_TOOLS_DIR = previous;
    rmSync(tools, { recursive: true, force: true });
  });

  const writePeers = (peers: PeerOperation[]) => {
    mkdirSync(join(tools, 'peers', 'state'), { recursive: true });
    writeFileSync(join(tools, 'peers', 'state', 'peers.json'), JSON.stringify(peers));
  };

  const tokenPeer = async (url: string): Promise<PeerOperation> => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    return {
      system: 'Fake',
      operation: 'client_credentials',
      url,
      form: { grant_type: 'client_credentials' },
      clientId: 'bench-agent',
      privateJwk: { ...(await exportJWK(privateKey)), kid: 'k', alg: 'ES256' },
      audience: url,
    };
  };

  it('skips everything when no peers were started', async () => {
    const result = await benchPeers({ durationSeconds: 1 });
    expect(result.rows).toEqual([]);
    expect(result.skipped[0]).toMatch(/no peers running/);
  });

  it('does not measure a peer that answers with an error, however fast', async () => {
    const peer = await fakePeer(400, { error: 'invalid_client' });
    try {
      writePeers([await tokenPeer(peer.url)]);
      const result = await benchPeers({ durationSeconds: 1 });
      expect(result.rows).toEqual([]);
      expect(result.skipped).toEqual([expect.stringMatching(/^Fake client_credentials: answered 400: .*invalid_client/)]);
      expect(peer.requests()).toBe(1);
    } finally {
      peer.server.close();
    }
  });

  it('does not measure a token endpoint that answers 200 without a token', async () => {
    const peer = await fakePeer(200, { token_type: 'Bearer' });
    try {
      writePeers([await tokenPeer(peer.url)]);
      const result = await benchPeers({ durationSeconds: 1 });
      expect(result.rows).toEqual([]);
      expect(result.skipped).toEqual([expect.stringMatching(/without an access token/)]);
    } finally {
      peer.server.close();
    }
  });

  it('does not measure a policy server that denies the benchmark input', async () => {
    const peer = await fakePeer(200, { result: { allow: false } });
    try {
      writePeers([{ system: 'OPA', operation: 'data API', url: peer.url, json: 'writ-policy-input' }]);
      const result = await benchPeers({ durationSeconds: 1 });
      expect(result.rows).toEqual([]);
      expect(result.skipped).toEqual([expect.stringMatching(/^OPA data API: did not allow the benchmark input/)]);
    } finally {
      peer.server.close();
    }
  });

  it('reports a phase whose requests fail as failed, not as a result', async () => {
    // The probe succeeds; every later request is refused.
    const peer = await fakePeer(200, { access_token: 'x' }, { status: 503, body: { error: 'unavailable' } });
    process.env.WRIT_BENCH_PEER_WARMUP_ROUNDS = '1';
    try {
      writePeers([await tokenPeer(peer.url)]);
      const result = await benchPeers({ durationSeconds: 1 });
      expect(result.rows.map((row) => row.result.non2xx > 0)).toEqual([true, true]);
      expect(result.skipped).toEqual([
        expect.stringMatching(/^Fake client_credentials, max: \d+ of \d+ requests failed; not a result$/),
        expect.stringMatching(/^Fake client_credentials @ \d+\/s: \d+ of \d+ requests failed; not a result$/),
      ]);
    } finally {
      delete process.env.WRIT_BENCH_PEER_WARMUP_ROUNDS;
      peer.server.close();
    }
  }, 60_000);
});
