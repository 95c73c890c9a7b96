import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/**
 * Thrown when a file or directory that holds secrets (the data directory, the master key, the
 * admin token, the PostgreSQL passwords) could be read or replaced by another local user. The
 * message is one line naming the path and the command that fixes it; never a secret.
 */
export class InsecurePathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InsecurePathError';
  }
}

function effectiveUid(): number | undefined {
  return typeof process.geteuid === 'function' ? process.geteuid() : undefined;
}

/**
 * Makes sure `dir` (`WRIT_DATA_DIR`) is a directory only this user can change: created 0700 when
 * missing; refused (not repaired) when it is owned by another user, writable by group or others,
 * or reached through a symbolic link another user owns. Whoever can write there could plant a
 * master key or an admin token of their own, or a `postgres.json` pointing the services at their
 * own database (as Vault and OpenSSH, Writ does not start on such a directory). Read and search
 * permission for others are left alone: every secret in it is 0600.
 */
export async function ensurePrivateDirectory(dir: string): Promise<void> {
  const path = resolve(dir);
  await mkdir(path, { recursive: true, mode: 0o700 });
  const uid = effectiveUid();
  if (uid === undefined) return;
  const link = await lstat(path);
  if (link.isSymbolicLink() && link.uid !== uid && link.uid !== 0) {
    throw new InsecurePathError(`${path} is a symbolic link owned by another user (uid ${link.uid}): choose another WRIT_DATA_DIR`);
  }
  const info = await stat(path);
  if (!info.isDirectory()) throw new InsecurePathError(`${path} is not a directory: choose another WRIT_DATA_DIR`);
  if (info.uid !== uid) {
    throw new InsecurePathError(`${path} is owned by another user (uid ${info.uid}): chown it to this user or choose another WRIT_DATA_DIR`);
  }
  if ((info.mode & 0o022) !== 0) {
    throw new InsecurePathError(`${path} is writable by other users (mode ${(info.mode & 0o777).toString(8)}): chmod go-w ${path}`);
  }
}

/**
 * Reads a secret file (the master key, an admin token, a PostgreSQL password file), refusing one
 * that is not a regular file owned by this user with no permission for group or others: a key
 * another user can read is no longer secret, and one they could have written is theirs. Checked
 * on the opened file, so nothing can swap it between the check and the read.
 */
export async function readPrivateFile(file: string): Promise<string> {
  const handle = await open(file, constants.O_RDONLY);
  try {
    const info = await handle.stat();
    const uid = effectiveUid();
    if (!info.isFile()) throw new InsecurePathError(`${file} is not a regular file`);
    if (uid !== undefined && info.uid !== uid) {
      throw new InsecurePathError(`${file} is owned by another user (uid ${info.uid}): chown it to this user`);
    }
    if (uid !== undefined && (info.mode & 0o077) !== 0) {
      throw new InsecurePathError(`${file} is readable or writable by other users (mode ${(info.mode & 0o777).toString(8)}): chmod 600 ${file}`);
    }
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `file` with `content` (mode 0600) through a fresh temporary file and a rename: never
 * written through, or `chmod`ed through, a symbolic link planted at its name, and never seen
 * half-written.
 */
export async function writePrivateFile(file: string, content: string): Promise<void> {
  const temporary = `${resolve(dirname(file), `.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)}`;
  const handle = await open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await handle.writeFile(content);
    await handle.chmod(0o600);
  } finally {
    await handle.close();
  }
  try {
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}
