import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClientKey, jwksOf } from '@writ/testing';
import { alive, buildOnce, startWrit, WritProcess } from './support/writ-process';

jest.setTimeout(300_000);

const postmasterOf = (dataDir: string) => Number(readFileSync(join(dataDir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0]);

async function until(what: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await what()) return true;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return false;
}

/** The embedded PostgreSQL is supervised: a crash is restarted, an orphan is adopted and stopped. */
describe('faults: the embedded PostgreSQL', () => {
  let writ: WritProcess | undefined;
  beforeAll(() => buildOnce());
  afterAll(async () => {
    if (writ && writ.child.exitCode === null) {
      writ.child.kill('SIGTERM');
      await writ.exited;
    }
  });

  it('is restarted when its postmaster is killed, and adopted (then stopped) after its Writ process died', async () => {
    writ = await startWrit({ readyTimeoutMs: 180_000 });
    const jwks = jwksOf(await createClientKey());
    let n = 0;
    const createAgent = async (url: string, token: string) => {
      const id = `sup-${n++}`;
      return fetch(`${url}/v1/agents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id, name: id, jwks }),
        signal: AbortSignal.timeout(30_000),
      }).then(
        (res) => res.status,
        () => 0,
      );
    };
    expect(await createAgent(writ.adminUrl, writ.adminToken)).toBe(201);

    // A crash of PostgreSQL: refused (503) meanwhile, served again after the restart.
    const first = postmasterOf(writ.dataDir);
    process.kill(first, 'SIGKILL');
    const current = writ;
    expect(await until(async () => (await createAgent(current.adminUrl, current.adminToken)) === 201 && postmasterOf(current.dataDir) !== first, 60_000)).toBe(
      true,
    );
    expect((await fetch(`${writ.adminUrl}/health/live`)).status).toBe(200);
    expect(writ.output()).toContain('embedded PostgreSQL restarted');

    // Writ killed outright: its PostgreSQL is orphaned. The next start adopts it...
    const orphan = postmasterOf(writ.dataDir);
    writ.child.kill('SIGKILL');
    await writ.exited;
    expect(alive(orphan)).toBe(true);
    writ = await startWrit({ dataDir: writ.dataDir, readyTimeoutMs: 120_000 });
    expect(writ.output()).toContain(`adopting the orphaned PostgreSQL (pid ${orphan})`);
    expect(await createAgent(writ.adminUrl, writ.adminToken)).toBe(201);
    // ...and a graceful stop stops it.
    writ.child.kill('SIGTERM');
    expect((await writ.exited).code).toBe(0);
    expect(await until(() => !alive(orphan), 15_000)).toBe(true);
  });

  it('fails liveness, naming why, when the crashed PostgreSQL cannot be restarted', async () => {
    const { renameSync } = await import('node:fs');
    const broken = await startWrit({ readyTimeoutMs: 180_000 });
    try {
      const postmaster = postmasterOf(broken.dataDir);
      // The cluster cannot start again (and a restart must not re-create it).
      renameSync(join(broken.dataDir, 'postgres', 'PG_VERSION'), join(broken.dataDir, 'postgres', 'PG_VERSION.away'));
      process.kill(postmaster, 'SIGKILL');
      let live: Response | undefined;
      expect(await until(async () => (live = await fetch(`${broken.adminUrl}/health/live`)).status === 503, 60_000)).toBe(true);
      expect(await live!.json()).toEqual({ status: 'down', reason: expect.stringContaining('could not be restarted') });
      expect((await fetch(`${broken.adminUrl}/health/ready`)).status).toBe(503);
    } finally {
      broken.child.kill('SIGTERM');
      await broken.exited;
    }
  });
});
