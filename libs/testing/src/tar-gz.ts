import { gzipSync } from 'node:zlib';

/** A ustar header block for a regular file (type '0') or another type (`link`: a link's target). */
function tarHeader(name: string, size: number, type = '0', link = ''): Buffer {
  const header = Buffer.alloc(512);
  header.write(name.slice(0, 100), 0, 'utf8');
  header.write(link.slice(0, 100), 157, 'utf8');
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write(type, 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return header;
}

function pad(body: Buffer): Buffer {
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/**
 * A gzip'd tar of these files, in order (a policy bundle, say); `pax` gives a file a PAX path
 * record; `type` and `link` make another kind of entry (`'1'` a hard link, `'2'` a symbolic one).
 */
export function tarGz(files: Array<[string, Buffer | string, { pax?: boolean; type?: string; link?: string }?]>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content, options] of files) {
    const body = Buffer.from(content);
    if (options?.pax) {
      const record = (length: number) => `${length} path=${name}\n`;
      let length = record(0).length;
      while (Buffer.byteLength(record(length)) !== length) length = Buffer.byteLength(record(length));
      const pax = Buffer.from(record(length));
      blocks.push(tarHeader('PaxHeader', pax.length, 'x'), pad(pax), tarHeader('ignored-name', body.length), pad(body));
    } else {
      blocks.push(tarHeader(name, body.length, options?.type, options?.link), pad(body));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(blocks));
}
