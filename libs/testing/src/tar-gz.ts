import { gzipSync } from 'node:zlib';

/** How an entry's header is written: its magic, and bytes in the ustar `prefix` field (345..500). */
interface HeaderFormat {
  /** `ustar`: POSIX (`ustar\0` `00`, the default); `gnu`: old GNU (`ustar  \0`); `v7`: no magic. */
  magic?: 'ustar' | 'gnu' | 'v7';
  prefix?: string;
}

const MAGIC = { ustar: 'ustar\u000000', gnu: 'ustar  \u0000', v7: '' };

/** A ustar header block for a regular file (type '0') or another type (`link`: a link's target). */
function tarHeader(name: string, size: number, type = '0', link = '', format: HeaderFormat = {}): Buffer {
  const header = Buffer.alloc(512);
  header.write(name.slice(0, 100), 0, 'utf8');
  if (format.prefix) header.write(format.prefix.slice(0, 155), 345, 'utf8');
  header.write(link.slice(0, 100), 157, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write(type, 156);
  header.write(MAGIC[format.magic ?? 'ustar'], 257, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return header;
}

function pad(body: Buffer): Buffer {
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/** One PAX extended header record, `<length> <key>=<value>\n` (the length in bytes, itself included). */
export function paxRecord(key: string, value: string): string {
  const record = (length: number) => `${length} ${key}=${value}\n`;
  let length = record(0).length;
  while (Buffer.byteLength(record(length)) !== length) length = Buffer.byteLength(record(length));
  return record(length);
}

/** What {@link tarGz} makes of one file beside its name and content. */
export interface TarEntryOptions extends HeaderFormat {
  /** Give the path in a PAX `path` record (the header's own name is then `ignored-name`). */
  pax?: boolean;
  /** With `pax`: a GNU long name (`L`) entry after the PAX one, naming the file otherwise. */
  longName?: string;
  type?: string;
  link?: string;
}

/**
 * A gzip'd tar of these files, in order (a policy bundle, say); `pax` gives a file a PAX path
 * record; `type` and `link` make another kind of entry (`'1'` a hard link, `'2'` a symbolic one);
 * `magic` and `prefix` write the header as another tar format would.
 */
export function tarGz(files: Array<[string, Buffer | string, TarEntryOptions?]>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content, options] of files) {
    const body = Buffer.from(content);
    if (options?.pax) {
      const pax = Buffer.from(paxRecord('path', name));
      blocks.push(tarHeader('PaxHeader', pax.length, 'x'), pad(pax));
      if (options.longName !== undefined) {
        const longName = Buffer.from(`${options.longName}\0`);
        blocks.push(tarHeader('././@LongLink', longName.length, 'L', '', { magic: 'gnu' }), pad(longName));
      }
      blocks.push(tarHeader('ignored-name', body.length), pad(body));
    } else {
      blocks.push(tarHeader(name, body.length, options?.type, options?.link, options), pad(body));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}
