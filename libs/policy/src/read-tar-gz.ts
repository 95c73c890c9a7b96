import { gunzipSync } from 'node:zlib';

/** Refuse archives that inflate past this (a policy bundle is a few hundred KiB). */
const MAX_INFLATED_BYTES = 64 * 1024 * 1024;

/**
 * The regular files of a gzip'd tar archive, keyed by their path with one leading `/`
 * (`/policy.wasm`, `/data.json`), as `opa build` names them. Handles ustar, PAX (`x`) and
 * GNU long names (`L`); ignores directories and global headers. Throws on a
 * truncated or corrupt archive, and on an ambiguous one (two entries for one path, a path with
 * a `.`, `..` or empty segment, or an entry neither a regular file nor a directory, such as a
 * link): `tar x` keeps the last entry, resolves `..` and follows links, so what a reviewer
 * extracts would not be what is read here. Each entry is read at the path `tar x` gives it: the
 * ustar prefix field only under the POSIX magic, a PAX path before a GNU long name.
 */
export function readTarGz(bytes: Uint8Array): Map<string, Buffer> {
  const tar = gunzipSync(bytes, { maxOutputLength: MAX_INFLATED_BYTES });
  const files = new Map<string, Buffer>();
  let offset = 0;
  // What the next entry's extended headers say: a PAX path wins over a GNU long name, in either
  // order, as in GNU tar and Go's archive/tar (which opa uses).
  let nextLongName: string | undefined;
  let nextPaxPath: string | undefined;
  let nextSize: number | undefined;
  let ended = false;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((byte) => byte === 0)) {
      ended = true;
      break;
    }
    if (!validChecksum(header)) throw new Error(`corrupt tar header at byte ${offset}`);
    const text = (start: number, length: number) => cString(header.subarray(start, start + length));
    const type = text(156, 1) || '0';
    const extended = type === 'L' || type === 'x' || type === 'g';
    // A PAX size is the size of the entry it describes, not of another extended header.
    const size = (extended ? undefined : nextSize) ?? parseOctal(header.subarray(124, 136));
    // The prefix field exists under the POSIX magic only: an old GNU header keeps times there, and
    // tar x ignores those bytes in any header but a POSIX one.
    const prefix = POSIX_MAGIC.equals(header.subarray(257, 263)) ? text(345, 155) : '';
    const name = nextPaxPath ?? nextLongName ?? (prefix ? `${prefix}/${text(0, 100)}` : text(0, 100));
    if (!extended) [nextLongName, nextPaxPath, nextSize] = [undefined, undefined, undefined];
    const start = offset + 512;
    if (start + size > tar.length) throw new Error(`truncated tar entry ${name}`);
    const body = tar.subarray(start, start + size);
    offset = start + Math.ceil(size / 512) * 512;
    if (type === 'L') {
      nextLongName = cString(body);
    } else if (type === 'x' || type === 'g') {
      const pax = parsePax(body);
      // tar x extracts a PAX sparse file at GNU.sparse.name, its content rebuilt from a map, and
      // applies a global header's path to the entries after it: neither is read here, so refused.
      const renaming = [...pax.keys()].find((key) => key.startsWith('GNU.sparse.') || (type === 'g' && GLOBAL_REFUSED.has(key)));
      if (renaming !== undefined) throw new Error(`the tar entry ${JSON.stringify(name)} has a PAX record ${renaming}, which tar x extracts differently`);
      if (type === 'g') continue;
      nextPaxPath = pax.get('path') ?? nextPaxPath;
      const paxSize = pax.get('size');
      if (paxSize !== undefined) nextSize = Number(paxSize);
    } else if (type === '0' || type === '7') {
      const path = filePath(name);
      if (files.has(path)) throw new Error(`two entries for ${path}`);
      files.set(path, Buffer.from(body));
    } else if (type === '5') {
      // tar x reads a directory as a header alone, the next header right after it: entries hidden in
      // its "content" are extracted there and skipped here.
      if (size !== 0) throw new Error(`the tar directory entry ${JSON.stringify(name)} has a size (${size} bytes), which tar x reads as entries`);
    } else {
      // A link, a device, a sparse or GNU multi-volume file...: `tar x` makes something of it at
      // its path (a data.json that is another entry's content), which this reader would skip.
      throw new Error(`the tar entry ${JSON.stringify(name)} is of type ${JSON.stringify(type)}, not a regular file or a directory`);
    }
  }
  if (!ended && offset !== tar.length) throw new Error('not a tar archive, or a truncated one');
  if (!ended && files.size === 0) throw new Error('an empty tar archive');
  return files;
}

/** The entry's path with one leading `/` (a leading `./` or `/` dropped); throws when not canonical. */
function filePath(name: string): string {
  const path = name.replace(/^(\.?\/)+/, '');
  if (path.split('/').some((segment) => segment === '' || segment === '.' || segment === '..')) {
    throw new Error(`the tar entry ${JSON.stringify(name)} has a ".", ".." or empty path segment`);
  }
  return `/${path}`;
}

/** PAX records a global header may not carry: they would name or size the entries after it. */
const GLOBAL_REFUSED = new Set(['path', 'size', 'linkpath']);

/** `magic` of a POSIX ustar header (then `version` "00"); old GNU headers have "ustar  \0". */
const POSIX_MAGIC = Buffer.from('ustar\0', 'latin1');

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return Buffer.from(end === -1 ? bytes : bytes.subarray(0, end)).toString('utf8');
}

function parseOctal(bytes: Uint8Array): number {
  const text = cString(bytes).trim();
  if (!/^[0-7]*$/.test(text)) throw new Error('corrupt tar size field');
  return text === '' ? 0 : parseInt(text, 8);
}

function validChecksum(header: Uint8Array): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i];
  return sum === parseOctal(header.subarray(148, 156));
}

/** PAX extended header records: "<length> <key>=<value>\n", the length in bytes. */
function parsePax(body: Uint8Array): Map<string, string> {
  const records = new Map<string, string>();
  const bytes = Buffer.from(body);
  let offset = 0;
  while (offset < bytes.length) {
    const space = bytes.indexOf(0x20, offset);
    if (space === -1) break;
    const length = Number(bytes.subarray(offset, space).toString('ascii'));
    if (!Number.isInteger(length) || length <= space - offset) break;
    const record = bytes.subarray(space + 1, offset + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0) records.set(record.slice(0, eq), record.slice(eq + 1));
    offset += length;
  }
  return records;
}
