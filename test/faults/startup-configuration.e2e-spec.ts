import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts } from '@writ/testing';
import { alive, buildOnce, startWrit } from './support/writ-process';

jest.setTimeout(240_000);

/** The one line a start that failed printed, from startWrit's rejection. */
async function startFailure(env: Record<string, string>): Promise<string> {
  try {
    const writ = await startWrit({ env, readyTimeoutMs: 180_000 });
    writ.child.kill('SIGKILL');
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('the start was expected to fail');
}

describe('faults: a start with invalid variables', () => {
  beforeAll(() => buildOnce());

  it('stops at once with one line naming each variable, never echoing a secret', async () => {
    const message = await startFailure({
      WRIT_AUTH_PORT: '0x10',
      WRIT_ISSUER: 'http://writ:hunter2-issuer@127.0.0.1:4000',
      WRIT_DATABASE_URL: 'postgres://writ:hunter2-database@db.invalid:99999/writ',
      WRIT_MASTER_KEY: 'hunter2-master-key',
    });
    expect(message).toContain('exited (code 1)');
    const line = message.split('\n').find((text) => text.startsWith('writ: writ cannot start: invalid configuration: '));
    expect(line).toBeDefined();
    for (const variable of ['WRIT_AUTH_PORT', 'WRIT_ISSUER', 'WRIT_DATABASE_URL', 'WRIT_MASTER_KEY']) expect(line).toContain(variable);
    expect(message).not.toContain('hunter2');
  });
});

describe('faults: a start that cannot listen says which variable to look at', () => {
  let taken: Server;
  let takenPort: number;

  beforeAll(async () => {
    buildOnce();
    taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    takenPort = (taken.address() as { port: number }).port;
  });
  afterAll(() => new Promise<void>((resolve) => taken.close(() => resolve())));

  it('names the port variable when the port is in use, and exits 1', async () => {
    const message = await startFailure({ WRIT_GATEWAY_PORT: String(takenPort), WRIT_GATEWAY_URL: `http://127.0.0.1:${takenPort}` });
    expect(message).toContain('exited (code 1)');
    expect(message).toContain(`writ: writ cannot start: cannot listen on 127.0.0.1:${takenPort}: the port is in use (WRIT_GATEWAY_PORT)`);
  });

  it('names WRIT_HOST when its name does not resolve, or is no address of this host', async () => {
    expect(await startFailure({ WRIT_HOST: 'writ-listen.invalid' })).toMatch(
      /writ: writ cannot start: cannot listen on writ-listen\.invalid:\d+: the host name does not resolve \(WRIT_HOST\)/,
    );
    // TEST-NET-1 (RFC 5737): never an address of this host.
    expect(await startFailure({ WRIT_HOST: '192.0.2.1', WRIT_ALLOWED_HOSTS: '*' })).toMatch(
      /writ: writ cannot start: cannot listen on 192\.0\.2\.1:\d+: the address is not one of this host \(WRIT_HOST\)/,
    );
  });
});

describe('faults: a signal while starting', () => {
  beforeAll(() => buildOnce());

  /**
   * Starts the launcher on a fresh data directory and sends `signal` as soon as its embedded
   * PostgreSQL is up (the migrations and the rest of the start still to run).
   */
  async function signalWhileStarting(workers: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string; postmaster: number }> {
    const dataDir = await mkdtemp(join(tmpdir(), 'writ-start-signal-'));
    try {
      const [authPort, gatewayPort, adminPort] = await freePorts(3);
      const child = spawn(process.execPath, [join(__dirname, '..', '..', 'dist', 'apps', 'launcher', 'src', 'main.js')], {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? tmpdir(),
          WRIT_DATA_DIR: dataDir,
          WRIT_AUTH_PORT: String(authPort),
          WRIT_GATEWAY_PORT: String(gatewayPort),
          WRIT_ADMIN_PORT: String(adminPort),
          WRIT_WORKERS: workers,
          WRIT_LOG_LEVEL: 'info',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.once('exit', (code, signal) => resolve({ code, signal })),
      );
      const pidFile = join(dataDir, 'postgres', 'postmaster.pid');
      const postmasterPid = () => {
        try {
          return Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
        } catch {
          return NaN; // not written yet
        }
      };
      const deadline = Date.now() + 120_000;
      // The file is written in steps: wait for a whole pid.
      while (!(postmasterPid() > 0) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      const postmaster = postmasterPid();
      expect(postmaster).toBeGreaterThan(0);
      expect(output).not.toContain('Writ is ready');
      child.kill('SIGTERM');
      const result = await exited;
      for (let waited = 0; alive(postmaster) && waited < 10_000; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
      return { ...result, output, postmaster };
    } finally {
      await rm(dataDir, { recursive: true, force: true, maxRetries: 10 });
    }
  }

  it.each(['1', '2'])('abandons the start, stops the PostgreSQL it started and exits 0 (WRIT_WORKERS=%s)', async (workers) => {
    const { code, signal, output, postmaster } = await signalWhileStarting(workers);
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(output).not.toContain('Writ is ready');
    expect(alive(postmaster)).toBe(false);
  });
});
