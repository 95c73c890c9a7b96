import { readdirSync, readFileSync } from 'node:fs';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { freePorts } from '@writ/testing';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(__dirname, '..', '..', '..');

/** Builds dist/ when a source is newer (the suite runs the built services, as production does). */
export function buildOnce(): void {
  const result = spawnSync(process.execPath, [join(root, 'scripts', 'build.js'), '--if-needed'], { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) throw new Error('npm run build failed');
}

/** A Writ process started as production starts it, on loopback ports of its own. */
export interface WritProcess {
  child: ChildProcess;
  authUrl: string;
  gatewayUrl: string;
  adminUrl: string;
  adminToken: string;
  dataDir: string;
  /** Everything it printed (JSON log lines and the rest). */
  output(): string;
  /** Resolves with the exit code (or the signal) once it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Data directories {@link startWrit} created (each holds an embedded PostgreSQL): removed after the suite. */
const created: string[] = [];
afterAll(async () => {
  await Promise.all(created.splice(0).map((dir) => rm(dir, { recursive: true, force: true })));
});

/** Options of {@link startWrit}. */
export interface StartWritOptions {
  /** `npm start` (the launcher through npm) or a `node dist/...` entry point. */
  command?: 'npm-start' | 'launcher';
  env?: Record<string, string>;
  dataDir?: string;
  /** How long to wait for readiness (an embedded PostgreSQL's first initdb is slow). */
  readyTimeoutMs?: number;
  /** In a process group of its own, as a terminal runs it (signal `-child.pid` for Ctrl-C). */
  processGroup?: boolean;
}

/** Starts Writ (all three services) and waits until every service is ready. */
export async function startWrit(options: StartWritOptions = {}): Promise<WritProcess> {
  const [authPort, gatewayPort, adminPort] = await freePorts(3);
  let dataDir = options.dataDir;
  if (!dataDir) created.push((dataDir = await mkdtemp(join(tmpdir(), 'writ-faults-'))));
  const adminToken = `writ_admin_faults_${randomBytes(24).toString('base64url')}`;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? tmpdir(),
    WRIT_DATA_DIR: dataDir,
    WRIT_AUTH_PORT: String(authPort),
    WRIT_GATEWAY_PORT: String(gatewayPort),
    WRIT_ADMIN_PORT: String(adminPort),
    WRIT_ISSUER: `http://127.0.0.1:${authPort}`,
    WRIT_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
    WRIT_ADMIN_TOKEN: adminToken,
    WRIT_LOG_LEVEL: 'info',
    WRIT_THROTTLE_SOURCE_FAILURES: '1000000',
    ...options.env,
  };
  const child =
    options.command === 'npm-start'
      ? spawn('npm', ['start', '--silent'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: options.processGroup })
      : spawn(process.execPath, [join(root, 'dist', 'apps', 'launcher', 'src', 'main.js')], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const urls = { authUrl: `http://127.0.0.1:${authPort}`, gatewayUrl: `http://127.0.0.1:${gatewayPort}`, adminUrl: `http://127.0.0.1:${adminPort}` };
  const deadline = Date.now() + (options.readyTimeoutMs ?? 90_000);
  let ended: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  void exited.then((result) => (ended = result));
  for (;;) {
    if (ended) throw new Error(`writ exited (code ${ended.code}) before it was ready:\n${output.slice(-3000)}`);
    const ready = await Promise.all(
      Object.values(urls).map((url) =>
        fetch(`${url}/health/ready`).then(
          (res) => res.status === 200,
          () => false,
        ),
      ),
    );
    if (ready.every(Boolean)) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`writ was not ready in time:\n${output.slice(-3000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return { child, ...urls, adminToken, dataDir, output: () => output, exited };
}

/** True while a process with this pid exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Pids of every process whose parent is `pid` (from /proc). */
export function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return children;
}
