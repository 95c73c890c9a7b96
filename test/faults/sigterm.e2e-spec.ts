import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { createClientKey, createTestDatabase, jwksOf, TestDatabase } from '@writ/testing';
import { alive, buildOnce, childrenOf, startWrit, WritProcess } from './support/writ-process';

jest.setTimeout(240_000);

interface Outcome {
  id: string;
  status: number | 'connection';
}

/**
 * Creates agents as fast as `workers` callers can until the process is gone: every created
 * agent has an `admin.agent.created` audit event, so a 201 whose event is missing is a lost
 * audit event. Connection errors are expected only once the process stops accepting.
 */
async function loadUntilGone(writ: WritProcess, workers: number): Promise<{ outcomes: Outcome[]; stop: () => void; done: Promise<void> }> {
  const jwks = jwksOf(await createClientKey());
  const outcomes: Outcome[] = [];
  let running = true;
  let n = 0;
  const worker = async (w: number) => {
    let refusedInARow = 0;
    while (running && refusedInARow < 5) {
      const id = `load-${w}-${n++}`;
      try {
        const res = await fetch(`${writ.adminUrl}/v1/agents`, {
          method: 'POST',
          headers: { authorization: `Bearer ${writ.adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ id, name: id, jwks }),
        });
        await res.arrayBuffer();
        outcomes.push({ id, status: res.status });
        refusedInARow = 0;
      } catch {
        outcomes.push({ id, status: 'connection' });
        refusedInARow += 1;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };
  const done = Promise.all(Array.from({ length: workers }, (_, w) => worker(w))).then(() => undefined);
  return { outcomes, stop: () => (running = false), done };
}

/** The exit of a signalled process, or a failure (and SIGKILL) when it does not exit in time. */
async function exitOf(writ: WritProcess, ms = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null } | 'did not exit'> {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([writ.exited, new Promise<'did not exit'>((resolve) => (timer = setTimeout(() => resolve('did not exit'), ms)))]);
  clearTimeout(timer);
  if (result === 'did not exit') writ.child.kill('SIGKILL');
  return result;
}

async function createdEvents(url: string): Promise<Set<string>> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ agent_id: string }>(`SELECT agent_id FROM audit_events WHERE type = 'admin.agent.created'`);
    return new Set(rows.map((row) => row.agent_id));
  } finally {
    await client.end();
  }
}

function expectGracefulOutcomes(outcomes: Outcome[], recorded: Set<string>): void {
  const statuses = new Set(outcomes.map((outcome) => outcome.status));
  // Created, or refused while draining (503): never a 500, never a cut answer counted as done.
  for (const status of statuses) expect([201, 503, 'connection']).toContain(status);
  const created = outcomes.filter((outcome) => outcome.status === 201);
  expect(created.length).toBeGreaterThan(10);
  const lost = created.filter((outcome) => !recorded.has(outcome.id));
  expect(lost).toEqual([]);
}

describe('faults: SIGTERM under load', () => {
  beforeAll(() => buildOnce());

  describe('external PostgreSQL, three services in one process', () => {
    let db: TestDatabase;
    beforeAll(async () => {
      db = await createTestDatabase();
    });
    afterAll(async () => {
      await db?.drop();
    });

    it('drains every admitted request, keeps every audit event, and exits 0', async () => {
      const writ = await startWrit({
        env: { WRIT_DATABASE_URL: db.serviceUrl ?? db.url, WRIT_MASTER_KEY: Buffer.alloc(32, 7).toString('base64') },
      });
      const load = await loadUntilGone(writ, 8);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      writ.child.kill('SIGTERM');
      const exit = await exitOf(writ);
      load.stop();
      await load.done;
      expect(exit).toEqual({ code: 0, signal: null });
      expect(writ.output()).not.toContain('Cannot use a pool after calling end');
      expectGracefulOutcomes(load.outcomes, await createdEvents(db.url));
    });
  });

  describe('embedded PostgreSQL, through npm start', () => {
    it('drains, stops PostgreSQL last, leaves no process behind, and exits 0', async () => {
      const writ = await startWrit({ command: 'npm-start', readyTimeoutMs: 180_000 });
      const descendants = childrenOf(writ.child.pid!).flatMap((pid) => [pid, ...childrenOf(pid)]);
      const postmaster = Number(readFileSync(join(writ.dataDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);
      expect(alive(postmaster)).toBe(true);
      const load = await loadUntilGone(writ, 8);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      // What a container runtime or systemd does: signal the process it started (npm).
      writ.child.kill('SIGTERM');
      const exit = await exitOf(writ);
      load.stop();
      await load.done;
      expect(exit).toEqual({ code: 0, signal: null });
      // Nothing outlives npm: not the node process, not PostgreSQL.
      const deadline = Date.now() + 10_000;
      while ([...descendants, postmaster].some(alive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
      expect([...descendants, postmaster].filter(alive)).toEqual([]);
      expect(existsSync(join(writ.dataDir, 'postgres', 'postmaster.pid'))).toBe(false);
      expect(writ.output()).toContain('writ stopped');

      // Started again on the same data directory: every created agent has its event, and the chain verifies.
      const again = await startWrit({ dataDir: writ.dataDir, readyTimeoutMs: 120_000 });
      try {
        const credentials = JSON.parse(readFileSync(join(writ.dataDir, 'postgres.json'), 'utf8')) as { password: string; port: number };
        const url = `postgres://postgres:${encodeURIComponent(credentials.password)}@127.0.0.1:${credentials.port}/writ`;
        expectGracefulOutcomes(load.outcomes, await createdEvents(url));
        const verify = await fetch(`${again.adminUrl}/v1/audit/verify`, { headers: { authorization: `Bearer ${again.adminToken}` } });
        expect(((await verify.json()) as { valid: boolean }).valid).toBe(true);
      } finally {
        again.child.kill('SIGTERM');
        expect((await again.exited).code).toBe(0);
      }
    });

    it('stops on Ctrl-C (SIGINT to the whole process group, PostgreSQL included) without an error', async () => {
      const writ = await startWrit({ command: 'npm-start', readyTimeoutMs: 180_000, processGroup: true });
      const created = await fetch(`${writ.adminUrl}/v1/agents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${writ.adminToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: 'before-ctrl-c', name: 'before-ctrl-c', jwks: jwksOf(await createClientKey()) }),
      });
      expect(created.status).toBe(201);
      // What a terminal does on Ctrl-C: every process of the foreground group gets SIGINT, the
      // embedded PostgreSQL too, which then refuses the last audit checkpoint's connection.
      process.kill(-writ.child.pid!, 'SIGINT');
      expect(await exitOf(writ)).toEqual({ code: 0, signal: null });
      const lines = writ
        .output()
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as { level: number; msg: string });
      expect(lines.filter((line) => line.level >= 50).map((line) => line.msg)).toEqual([]);
      expect(lines.map((line) => line.msg)).toContain('writ stopped');
    });
  });
});
