import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { paxRecord, tarGz, type TarEntryOptions } from '@writ/testing';
import { defaultPolicyPath } from './default-policy';
import { policyVersion, readPolicyBundle } from './policy-bundle';
import { readTarGz } from './read-tar-gz';

const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest();
const echoWasm = readFileSync(join(__dirname, '..', 'test-fixtures', 'echo.wasm'));

describe('readPolicyBundle', () => {
  it('reads the committed bundle: its module, its data, and a version over both', () => {
    const bytes = readFileSync(defaultPolicyPath());
    const bundle = readPolicyBundle(bytes);
    const files = readTarGz(bytes);
    expect(bundle.format).toBe('bundle');
    expect(bundle.wasm.equals(files.get('/policy.wasm')!)).toBe(true);
    expect(bundle.data).toEqual(JSON.parse(files.get('/data.json')!.toString('utf8')));
    const expected = sha256(
      Buffer.concat([
        sha256(bundle.wasm),
        sha256('{"writ":{"config":{"approval":{},"connectors":{},"quarantine_after":3,"read_max_uses":null,"ttl_seconds":{"read":300,"write":120}}}}'),
      ]),
    );
    expect(bundle.version).toBe(expected.toString('hex'));
  });

  it('reads a bare module with empty data, its version the SHA-256 of its bytes', () => {
    const bundle = readPolicyBundle(echoWasm);
    expect(bundle).toMatchObject({ format: 'wasm', data: {}, version: sha256(echoWasm).toString('hex') });
  });

  it('gives the same version whatever the data formatting and tar framing', () => {
    const compact = readPolicyBundle(
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/data.json', '{"a":1,"b":[true]}'],
      ]),
    );
    const spaced = readPolicyBundle(
      tarGz([
        ['data.json', '{ "b": [ true ],\n  "a": 1.0 }'],
        ['./policy.wasm', echoWasm, { pax: true }],
      ]),
    );
    expect(spaced.version).toBe(compact.version);
    expect(
      readPolicyBundle(
        tarGz([
          ['/policy.wasm', echoWasm],
          ['/data.json', '{"a":2,"b":[true]}'],
        ]),
      ).version,
    ).not.toBe(compact.version);
    expect(policyVersion(echoWasm, {})).not.toBe(policyVersion(echoWasm));
  });

  it('takes the module the manifest names for the entrypoint', () => {
    const manifest = JSON.stringify({
      wasm: [
        { entrypoint: 'other/allow', module: '/other.wasm' },
        { entrypoint: 'writ/grant/decision', module: '/writ.wasm' },
      ],
    });
    const bundle = readPolicyBundle(
      tarGz([
        ['/.manifest', manifest],
        ['/other.wasm', Buffer.from('x')],
        ['/writ.wasm', echoWasm],
      ]),
    );
    expect(bundle.wasm.equals(echoWasm)).toBe(true);
  });

  it('merges nested data.json files at their directory', () => {
    const bundle = readPolicyBundle(
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/writ/config/data.json', '{"quarantine_after":5}'],
        ['/data.json', '{"writ":{"other":1}}'],
      ]),
    );
    expect(bundle.data).toEqual({ writ: { other: 1, config: { quarantine_after: 5 } } });
  });

  it('keeps a __proto__ key as plain data', () => {
    const bundle = readPolicyBundle(
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/data.json', '{"__proto__":{"polluted":true}}'],
      ]),
    );
    expect(Object.hasOwn(bundle.data, '__proto__')).toBe(true);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it.each([
    ['text', Buffer.from('package writ.grant'), 'POLICY_FORMAT_INVALID'],
    ['gzip that is not a tar', gzipSync(Buffer.from('not a tar archive, not even 512 bytes')), 'POLICY_FORMAT_INVALID'],
    ['a corrupt gzip', Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x01, 0x02]), 'POLICY_FORMAT_INVALID'],
    ['a bundle without policy.wasm', tarGz([['/data.json', '{}']]), 'POLICY_WASM_MISSING'],
    [
      'data that is not JSON',
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/data.json', '{'],
      ]),
      'POLICY_DATA_INVALID',
    ],
    [
      'data that is not an object',
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/data.json', '[1]'],
      ]),
      'POLICY_DATA_INVALID',
    ],
    [
      'conflicting data',
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/data.json', '{"a":1}'],
        ['/a/data.json', '{}'],
      ]),
      'POLICY_DATA_INVALID',
    ],
    [
      'YAML data',
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/data.yaml', 'a: 1'],
      ]),
      'POLICY_DATA_INVALID',
    ],
    [
      'a bad manifest',
      tarGz([
        ['/.manifest', '{'],
        ['/policy.wasm', echoWasm],
      ]),
      'POLICY_FORMAT_INVALID',
    ],
    [
      'data nested deeper than it can be hashed',
      tarGz([
        ['/policy.wasm', echoWasm],
        ['/data.json', `{"a":${'['.repeat(20_000)}${']'.repeat(20_000)}}`],
      ]),
      'POLICY_DATA_INVALID',
    ],
  ])('refuses %s', (_name, bytes, code) => {
    expect(() => readPolicyBundle(bytes)).toThrow(expect.objectContaining({ name: 'PolicyLoadError', code }));
  });

  // tar x keeps the last of two entries with one path, a reader may look at the first: what a
  // reviewer extracts must be what runs, so an ambiguous archive is refused.
  it.each([
    [
      'two modules at one path',
      [
        ['/policy.wasm', readFileSync(join(__dirname, '..', 'test-fixtures', 'other-entrypoint.wasm'))],
        ['/policy.wasm', echoWasm],
      ],
    ],
    [
      'two data documents at one path',
      [
        ['/policy.wasm', echoWasm],
        ['/data.json', '{"writ":{"config":{"quarantine_after":3}}}'],
        ['/data.json', '{"writ":{"config":{"quarantine_after":1000}}}'],
      ],
    ],
    [
      'one path spelt two ways',
      [
        ['/policy.wasm', echoWasm],
        ['./data.json', '{"a":1}'],
        ['/data.json', '{"b":1}'],
      ],
    ],
    [
      'a path that climbs out of its directory',
      [
        ['/policy.wasm', echoWasm],
        ['/writ/../data.json', '{"a":1}'],
      ],
    ],
    [
      'a path with an empty segment',
      [
        ['/policy.wasm', echoWasm],
        ['/writ//data.json', '{"a":1}'],
      ],
    ],
    [
      'a data document replaced by a hard link to another entry',
      [
        ['/policy.wasm', echoWasm],
        ['/data.json', '{"writ":{"config":{"quarantine_after":3}}}'],
        ['/other.json', '{"writ":{"config":{"quarantine_after":1000}}}'],
        ['/data.json', '', { type: '1', link: 'other.json' }],
      ],
    ],
    [
      'a data document that is a symbolic link',
      [
        ['/policy.wasm', echoWasm],
        ['/other.json', '{"writ":{"config":{"quarantine_after":1000}}}'],
        ['/data.json', '', { type: '2', link: 'other.json' }],
      ],
    ],
    [
      'an entry of a kind tar extracts as a file (GNU sparse)',
      [
        ['/policy.wasm', echoWasm],
        ['/data.json', '{"a":1}', { type: 'S' }],
      ],
    ],
  ] as Array<[string, Array<[string, Buffer | string, { type?: string; link?: string }?]>]>)('refuses %s', (_name, files) => {
    expect(() => readPolicyBundle(tarGz(files))).toThrow(expect.objectContaining({ name: 'PolicyLoadError', code: 'POLICY_FORMAT_INVALID' }));
  });

  // What runs must be what `tar x` (GNU tar, libarchive, and Go's archive/tar, which opa uses)
  // extracts: they read the ustar prefix field only under the POSIX magic (an old GNU header keeps
  // times there), and a PAX path wins over a GNU long name whatever their order.
  it.each([
    ['an old GNU header with bytes in the prefix field', [['data.json', '{"config":{"quarantine_after":1000}}', { magic: 'gnu', prefix: 'writ' }]]],
    ['a v7 header with bytes in the prefix field', [['data.json', '{"config":{"quarantine_after":1000}}', { magic: 'v7', prefix: 'writ' }]]],
    ['a PAX path followed by a GNU long name', [['data.json', '{"config":{"quarantine_after":1000}}', { pax: true, longName: 'writ/data.json' }]]],
  ] as Array<[string, Array<[string, string, TarEntryOptions]>]>)('reads each entry at the path tar x extracts it to: %s', (_name, files) => {
    const bundle = readPolicyBundle(tarGz([['/policy.wasm', echoWasm], ...files]));
    expect(bundle.data).toEqual({ config: { quarantine_after: 1000 } });
  });

  it.each([
    [
      'a PAX sparse file, which tar x extracts at GNU.sparse.name',
      [
        ['/data.json', '{"writ":{"config":{"quarantine_after":1000}}}'],
        ['PaxHeader', paxRecord('GNU.sparse.major', '1') + paxRecord('GNU.sparse.minor', '0') + paxRecord('GNU.sparse.name', 'data.json'), { type: 'x' }],
        ['ignored', '{"writ":{"config":{"quarantine_after":3}}}'],
      ],
    ],
    [
      'a PAX global header naming the entries after it',
      [
        ['PaxGlobal', paxRecord('path', 'data.json'), { type: 'g' }],
        ['other.json', '{"writ":{"config":{"quarantine_after":3}}}'],
      ],
    ],
  ] as Array<[string, Array<[string, string, TarEntryOptions?]>]>)('refuses %s', (_name, files) => {
    expect(() => readPolicyBundle(tarGz([['/policy.wasm', echoWasm], ...files]))).toThrow(
      expect.objectContaining({ name: 'PolicyLoadError', code: 'POLICY_FORMAT_INVALID' }),
    );
  });

  it('refuses a directory entry with content, which tar x reads as further entries', () => {
    const hidden = gunzipSync(tarGz([['data.json', '{"writ":{"config":{"quarantine_after":3}}}']])).subarray(0, 1024);
    const directory = gunzipSync(tarGz([['writ/', hidden, { type: '5' }]])).subarray(0, 512 + hidden.length);
    const archive = Buffer.concat([
      gunzipSync(tarGz([['/policy.wasm', echoWasm]])).subarray(0, 512 + Math.ceil(echoWasm.length / 512) * 512),
      gunzipSync(tarGz([['/data.json', '{"writ":{"config":{"quarantine_after":1000}}}']])).subarray(0, 1024),
      directory,
      Buffer.alloc(1024),
    ]);
    expect(() => readPolicyBundle(gzipSync(archive))).toThrow(expect.objectContaining({ name: 'PolicyLoadError', code: 'POLICY_FORMAT_INVALID' }));
  });

  it('skips a PAX global header that names no entry, keeping the PAX path of the entry after it', () => {
    const bundle = readPolicyBundle(
      tarGz([
        ['/policy.wasm', echoWasm],
        ['PaxHeader', paxRecord('path', 'writ/data.json'), { type: 'x' }],
        ['PaxGlobal', paxRecord('comment', 'built by hand'), { type: 'g' }],
        ['ignored', '{"config":{}}'],
      ]),
    );
    expect(bundle.data).toEqual({ writ: { config: {} } });
  });

  it('reads the prefix field of a POSIX ustar header', () => {
    const bundle = readPolicyBundle(
      tarGz([
        ['/policy.wasm', echoWasm],
        ['data.json', '{"config":{}}', { prefix: 'writ' }],
      ]),
    );
    expect(bundle.data).toEqual({ writ: { config: {} } });
  });

  it('refuses a tar whose header checksum is wrong', () => {
    const good = tarGz([['/policy.wasm', echoWasm]]);
    const raw = gunzipSync(good);
    raw[0] ^= 0xff;
    expect(() => readPolicyBundle(gzipSync(raw))).toThrow(expect.objectContaining({ code: 'POLICY_FORMAT_INVALID' }));
  });
});
