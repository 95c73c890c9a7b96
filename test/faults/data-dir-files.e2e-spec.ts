import { randomBytes } from 'node:crypto';
import { existsSync, watch } from 'node:fs';
import { chmod, lstat, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildOnce, startWrit } from './support/writ-process';

jest.setTimeout(300_000);

/** The message of a start that was expected to fail (startWrit rejects with the output's tail). */
async function startFailure(options: Parameters<typeof startWrit>[0]): Promise<string> {
  try {
    const writ = await startWrit({ readyTimeoutMs: 180_000, ...options });
    writ.child.kill('SIGKILL');
    await writ.exited;
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('the start was expected to fail');
}

const modeOf = async (path: string) => (await stat(path)).mode & 0o777;

/**
 * What `npm start` leaves on disk, against another local user and a careless operator: the
 * secrets of the data directory stay private whatever the umask, nothing is written through a
 * symbolic link planted in it, the PostgreSQL superuser's password never passes through the
 * shared temporary directory, and a data directory or key others could read or write is refused.
 */
describe('faults: the files of the data directory', () => {
  const scratch: string[] = [];
  beforeAll(() => buildOnce());
  afterAll(async () => {
    await Promise.all(scratch.map((dir) => rm(dir, { recursive: true, force: true })));
  });
  const scratchDir = async (prefix: string) => {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    scratch.push(dir);
    return dir;
  };

  it('refuses a data directory that other users may write to, in one line', async () => {
    const dataDir = await scratchDir('writ-open-');
    await chmod(dataDir, 0o777);
    const message = await startFailure({ dataDir });
    expect(message).toContain('exited (code 1)');
    // Before anything is written there: no cluster, no key, no token another user could take.
    expect(message).toContain(
      `writ cannot start: cannot start the embedded PostgreSQL: ${dataDir} is writable by other users (mode 777): chmod go-w ${dataDir}`,
    );
    for (const name of ['postgres', 'postgres.json', 'master-key', 'admin-token']) expect([name, existsSync(join(dataDir, name))]).toEqual([name, false]);
  });

  it('hands the embedded PostgreSQL none of the secret variables (as root it runs as another user)', async () => {
    const masterKey = randomBytes(32).toString('base64');
    const writ = await startWrit({ env: { WRIT_MASTER_KEY: masterKey }, readyTimeoutMs: 180_000 });
    try {
      const postmaster = Number((await readFile(join(writ.dataDir, 'postgres', 'postmaster.pid'), 'utf8')).split('\n')[0]);
      const environment = (await readFile(`/proc/${postmaster}/environ`, 'utf8')).split('\0');
      expect(environment.some((entry) => entry.startsWith('PATH='))).toBe(true);
      expect(environment.filter((entry) => /^WRIT_(MASTER_KEY|ADMIN_TOKEN)/.test(entry))).toEqual([]);
      expect(environment.join('\n')).not.toContain(masterKey);
      expect(environment.join('\n')).not.toContain(writ.adminToken);
    } finally {
      writ.child.kill('SIGTERM');
      await writ.exited;
    }
  });

  it('under umask 000: secrets 0600, no write through a planted link, no password in the shared temp dir; a readable key is refused', async () => {
    const dataDir = await scratchDir('writ-files-');
    const elsewhere = await scratchDir('writ-victim-');
    // A link (dangling: a file Writ would create) where the superuser's credentials go, and one
    // to an existing file where the owner's pid goes: neither is written through, nor chmod-ed.
    const victim = join(elsewhere, 'victim');
    await symlink(victim, join(dataDir, 'postgres.json'));
    const existing = join(elsewhere, 'existing');
    await writeFile(existing, 'untouched\n', { mode: 0o644 });
    await symlink(existing, join(dataDir, 'postgres.owner'));
    // The temporary directory every local user shares: watched for the initdb password file.
    const shared = await scratchDir('writ-shared-tmp-');
    await chmod(shared, 0o1777);
    const seen: string[] = [];
    const watcher = watch(shared, (_event, name) => name && seen.push(String(name)));

    const previous = process.umask(0);
    let writ: Awaited<ReturnType<typeof startWrit>>;
    try {
      writ = await startWrit({ dataDir, env: { TMPDIR: shared, WRIT_ADMIN_TOKEN: '' }, readyTimeoutMs: 180_000 });
    } finally {
      process.umask(previous);
      watcher.close();
    }
    try {
      expect(seen.filter((name) => name.startsWith('pg-password-'))).toEqual([]);
      expect(existsSync(victim)).toBe(false);
      expect(await readFile(existing, 'utf8')).toBe('untouched\n');
      expect(await modeOf(existing)).toBe(0o644);
      expect((await lstat(join(dataDir, 'postgres.json'))).isFile()).toBe(true);
      expect((await lstat(join(dataDir, 'postgres.owner'))).isFile()).toBe(true);
      for (const secret of ['postgres.json', 'postgres-service.json', 'postgres.owner', 'master-key', 'admin-token']) {
        expect([secret, await modeOf(join(dataDir, secret))]).toEqual([secret, 0o600]);
      }
      expect((await modeOf(dataDir)) & 0o066).toBe(0);
      expect(existsSync(join(dataDir, '.initdb-tmp'))).toBe(false);
      // The generated token's path is printed, never the token.
      const token = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
      expect(writ.output()).toContain(`the admin token is in ${join(dataDir, 'admin-token')}`);
      expect(writ.output()).not.toContain(token);
    } finally {
      writ.child.kill('SIGTERM');
      await writ.exited;
    }

    // A careless copy left the key readable by everyone: refused, naming the fix, not used.
    const key = join(dataDir, 'master-key');
    await chmod(key, 0o644);
    const message = await startFailure({ dataDir, env: { WRIT_ADMIN_TOKEN: '' } });
    expect(message).toContain(`${key} is readable or writable by other users (mode 644): chmod 600 ${key}`);
    expect(message).not.toContain((await readFile(key, 'utf8')).trim());
  });
});
