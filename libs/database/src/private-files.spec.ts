import { chmod, chown, lstat, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { lchown } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensurePrivateDirectory, InsecurePathError, readPrivateFile, writePrivateFile } from './private-files';

/** A uid that is not this process's (nobody), for files another local user owns. */
const OTHER_UID = 65534;
const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

describe('files that hold secrets (WRIT_DATA_DIR, master key, admin token, PostgreSQL passwords)', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'writ-private-'));
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('creates a missing data directory 0700, whatever the umask', async () => {
    const previous = process.umask(0);
    try {
      await ensurePrivateDirectory(join(root, 'a', 'data'));
    } finally {
      process.umask(previous);
    }
    expect((await stat(join(root, 'a', 'data'))).mode & 0o777).toBe(0o700);
  });

  it('accepts a directory others may read or enter, but refuses one they may write to', async () => {
    const dir = join(root, 'data');
    await mkdir(dir);
    for (const mode of [0o700, 0o711, 0o755]) {
      await chmod(dir, mode);
      await expect(ensurePrivateDirectory(dir)).resolves.toBeUndefined();
    }
    for (const mode of [0o777, 0o770, 0o702, 0o1777]) {
      await chmod(dir, mode);
      await expect(ensurePrivateDirectory(dir)).rejects.toThrow(
        new InsecurePathError(`${dir} is writable by other users (mode ${(mode & 0o777).toString(8)}): chmod go-w ${dir}`),
      );
    }
  });

  (asRoot ? it : it.skip)('refuses a data directory owned by another user, or reached through their symbolic link', async () => {
    const theirs = join(root, 'theirs');
    await mkdir(theirs, { mode: 0o700 });
    await chown(theirs, OTHER_UID, OTHER_UID);
    await expect(ensurePrivateDirectory(theirs)).rejects.toThrow(/is owned by another user \(uid 65534\)/);

    const mine = join(root, 'mine');
    await mkdir(mine, { mode: 0o700 });
    const link = join(root, 'link');
    await symlink(mine, link);
    await expect(ensurePrivateDirectory(link)).resolves.toBeUndefined();
    await lchown(link, OTHER_UID, OTHER_UID);
    await expect(ensurePrivateDirectory(link)).rejects.toThrow(/is a symbolic link owned by another user/);
  });

  it('reads a 0600 file of this user, and refuses one others may read or write', async () => {
    const file = join(root, 'master-key');
    await writeFile(file, 'secret\n', { mode: 0o600 });
    expect(await readPrivateFile(file)).toBe('secret\n');
    for (const mode of [0o644, 0o640, 0o604, 0o622]) {
      await chmod(file, mode);
      await expect(readPrivateFile(file)).rejects.toThrow(`${file} is readable or writable by other users (mode ${mode.toString(8)}): chmod 600 ${file}`);
    }
  });

  (asRoot ? it : it.skip)('refuses a secret file another user owns (a key they planted is theirs)', async () => {
    const file = join(root, 'admin-token');
    await writeFile(file, 'planted\n', { mode: 0o600 });
    await chown(file, OTHER_UID, OTHER_UID);
    await expect(readPrivateFile(file)).rejects.toThrow(/is owned by another user \(uid 65534\)/);
  });

  it('replaces a file without writing or chmod-ing through a symbolic link planted at its name', async () => {
    const victim = join(root, 'victim');
    await writeFile(victim, 'untouched', { mode: 0o644 });
    const file = join(root, 'postgres.json');
    await symlink(victim, file);
    const previous = process.umask(0);
    try {
      await writePrivateFile(file, '{"password":"p"}');
    } finally {
      process.umask(previous);
    }
    expect(await readFile(victim, 'utf8')).toBe('untouched');
    expect((await stat(victim)).mode & 0o777).toBe(0o644);
    const written = await lstat(file);
    expect(written.isFile()).toBe(true);
    expect(written.mode & 0o777).toBe(0o600);
    expect(await readPrivateFile(file)).toBe('{"password":"p"}');
  });
});
