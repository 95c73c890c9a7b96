import { readFileSync, existsSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { alive, buildOnce, childrenOf, startWrit, WritProcess } from './support/writ-process';

jest.setTimeout(240_000);

/** A GET on a connection of its own (`agent: false`), so that the primary hands it to a worker in turn. */
function getOnNewConnection(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The node worker processes of a Writ primary (its children but the embedded PostgreSQL). */
function workersOf(writ: WritProcess): number[] {
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return ''; // gone meanwhile (a worker that just died, PostgreSQL stopping)
    }
  };
  const postmaster = Number(read(join(writ.dataDir, 'postgres', 'postmaster.pid')).split('\n')[0]);
  return childrenOf(writ.child.pid!).filter((pid) => pid !== postmaster && read(`/proc/${pid}/cmdline`).includes('main.js'));
}

async function until(condition: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return condition();
}

/** `writ_http_requests_total` of one service, method and status, summed over the exposition's series. */
function requestsCounted(metrics: string, service: string): number {
  return metrics
    .split('\n')
    .filter((line) => line.startsWith(`writ_http_requests_total{service="${service}",method="GET",status="200"}`))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

describe('WRIT_WORKERS: the services in node:cluster workers (embedded PostgreSQL)', () => {
  beforeAll(() => buildOnce());

  it('serves from every worker, aggregates /metrics, replaces a dead worker, and stops everything on SIGTERM', async () => {
    const writ = await startWrit({ env: { WRIT_WORKERS: '2' }, readyTimeoutMs: 180_000 });
    let exited = false;
    void writ.exited.then(() => (exited = true));
    try {
      const workers = workersOf(writ);
      expect(workers).toHaveLength(2);
      const postmaster = Number(readFileSync(join(writ.dataDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);
      // The primary owns the embedded PostgreSQL, so it outlives any one worker.
      expect(childrenOf(writ.child.pid!)).toContain(postmaster);

      // 40 requests on 40 connections, spread over both workers by the primary: a scrape (one
      // worker answers) counts all of them only if the primary aggregates every worker.
      const before = requestsCounted((await getOnNewConnection(`${writ.authUrl}/metrics`)).body, 'authorization-server');
      const answers = await Promise.all(Array.from({ length: 40 }, () => getOnNewConnection(`${writ.authUrl}/health/live`)));
      expect(answers.map((answer) => answer.status)).toEqual(Array(40).fill(200));
      const after = requestsCounted((await getOnNewConnection(`${writ.authUrl}/metrics`)).body, 'authorization-server');
      // The first scrape itself is counted too.
      expect(after - before).toBeGreaterThanOrEqual(41);
      // A gauge every worker reports alike (the policy in force) is reported once, not summed.
      const scraped = (await getOnNewConnection(`${writ.authUrl}/metrics`)).body;
      expect(scraped).toMatch(/^writ_policy_info\{version="[^"]+"\} 1$/m);
      // A counter each worker keeps for itself (Host refusals) is summed: 20 refusals on 20
      // connections, whichever workers answered them.
      const refusals = (text: string) =>
        Number(/^writ_host_refusals_total\{service="authorization-server",reason="not_allowed"\} (\d+)$/m.exec(text)?.[1] ?? NaN);
      expect(refusals(scraped)).toBe(0);
      const misdirected = await Promise.all(Array.from({ length: 20 }, () => getOnNewConnection(`${writ.authUrl}/jwks`, { host: 'rebound.attacker.example' })));
      expect(misdirected.map((answer) => answer.status)).toEqual(Array(20).fill(421));
      expect(refusals((await getOnNewConnection(`${writ.authUrl}/metrics`)).body)).toBe(20);

      // A worker killed outright is replaced; the service keeps answering meanwhile.
      process.kill(workers[0], 'SIGKILL');
      expect(await until(() => writ.output().includes('worker replaced'), 90_000)).toBe(true);
      expect(writ.output()).toContain('worker died: starting another');
      expect(workersOf(writ)).toHaveLength(2);
      expect(workersOf(writ)).not.toContain(workers[0]);
      expect(await until(async () => (await getOnNewConnection(`${writ.authUrl}/health/ready`).catch(() => ({ status: 0 }))).status === 200, 60_000)).toBe(
        true,
      );

      const running = [...workersOf(writ), postmaster];
      writ.child.kill('SIGTERM');
      const result = await writ.exited;
      expect(result).toEqual({ code: 0, signal: null });
      expect(await until(() => !running.some(alive), 10_000)).toBe(true);
      expect(existsSync(join(writ.dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
    } finally {
      if (!exited) writ.child.kill('SIGKILL');
    }
  });

  it('replaces a worker that dies while the others are still starting, and exits 1 once workers keep dying', async () => {
    // Ready as soon as one worker serves; with three, the later ones are still starting then.
    const writ = await startWrit({ env: { WRIT_WORKERS: '3' }, readyTimeoutMs: 180_000 });
    let exited = false;
    void writ.exited.then(() => (exited = true));
    try {
      const postmaster = Number(readFileSync(join(writ.dataDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);
      expect(writ.output()).not.toContain('workers started');
      const [first] = workersOf(writ).sort((a, b) => a - b);
      process.kill(first, 'SIGKILL');
      expect(await until(() => writ.output().includes('worker replaced'), 120_000)).toBe(true);
      expect(await until(() => writ.output().includes('workers started'), 120_000)).toBe(true);
      expect(await until(() => workersOf(writ).length === 3, 30_000)).toBe(true);
      expect(workersOf(writ)).not.toContain(first);

      // A crash loop: past 5 deaths a minute the primary stops everything and exits 1, so that
      // its supervisor sees the failure instead of a primary serving with no worker.
      let kills = 0;
      const deadline = Date.now() + 90_000;
      while (!exited && Date.now() < deadline) {
        const [victim] = workersOf(writ);
        if (victim === undefined) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          continue;
        }
        process.kill(victim, 'SIGKILL');
        kills += 1;
        await until(() => exited || !workersOf(writ).includes(victim), 10_000);
      }
      // The first death was replaced above: five more in the minute are allowed, the sixth is not.
      expect(kills).toBeLessThanOrEqual(6);
      const result = await writ.exited;
      expect(result).toEqual({ code: 1, signal: null });
      expect(writ.output()).toContain('workers keep dying: stopping');
      expect(await until(() => !alive(postmaster), 10_000)).toBe(true);
    } finally {
      if (!exited) writ.child.kill('SIGKILL');
    }
  });

  it('refuses a bad WRIT_WORKERS with one line naming it, and exits 1', async () => {
    await expect(startWrit({ env: { WRIT_WORKERS: 'many' }, readyTimeoutMs: 30_000 })).rejects.toThrow(
      /writ: writ cannot start: .*WRIT_WORKERS must be "auto" or an integer from 1 to 256, got "many"/,
    );
  });
});
