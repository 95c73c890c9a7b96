import { destinationErrors, destinationRefusal, UpstreamNetworks } from './upstream-destination';

const none = new UpstreamNetworks([]);
const loopback = new UpstreamNetworks(['127.0.0.0/8', '::1/128']);
const resolver = (table: Record<string, string[]>) => async (host: string) => {
  const addresses = table[host];
  if (!addresses) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
  return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
};

describe('UpstreamNetworks', () => {
  it.each([
    '169.254.169.254',
    '169.254.0.1',
    '0.0.0.0',
    '0.1.2.3',
    '::',
    'fe80::1',
    'febf::1',
    '::ffff:169.254.169.254',
    '::ffff:a9fe:a9fe',
    '0:0:0:0:0:ffff:a9fe:a9fe',
    'fd00:ec2::254',
    '100.100.100.200',
    '224.0.0.1',
    '255.255.255.255',
    'ff02::1',
    '64:ff9b::a9fe:a9fe',
    '64:ff9b::169.254.169.254',
    '::169.254.169.254',
    '2002:a9fe:a9fe::1',
    '192.0.0.192',
    '192.0.0.8',
    '192.0.0.255',
    '168.63.129.16',
    '::ffff:168.63.129.16',
    '::ffff:0:169.254.169.254',
    '::ffff:0:a9fe:a9fe',
    '0:0:0:0:ffff:0:a9fe:a9fe',
    '::ffff:0:192.0.0.192',
  ])('never allows %s, whatever is configured', (address) => {
    expect(new UpstreamNetworks(['0.0.0.0/0', '::/0']).refusal(address)).toMatch(/never reachable/);
  });

  it.each([
    '127.0.0.1',
    '127.8.9.10',
    '10.1.2.3',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '100.64.0.1',
    'fc00::1',
    'fd12::1',
    '::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::127.0.0.1',
    '64:ff9b::a00:1',
    '::ffff:0:127.0.0.1',
    '::ffff:0:a00:1',
    '2001:0:4136:e378:8000:63bf:3fff:fdd2',
  ])('allows the private or loopback %s only where configured', (address) => {
    expect(none.refusal(address)).toMatch(/outside WRIT_UPSTREAM_ALLOWED_NETWORKS/);
    expect(new UpstreamNetworks(['0.0.0.0/0', '::/0']).refusal(address)).toBeUndefined();
  });

  it('allows loopback through its CIDR and nothing else private', () => {
    expect(loopback.refusal('127.0.0.1')).toBeUndefined();
    expect(loopback.refusal('::1')).toBeUndefined();
    expect(loopback.refusal('10.0.0.1')).toMatch(/outside/);
  });

  it.each(['8.8.8.8', '172.32.0.1', '192.169.0.1', '192.0.1.1', '168.63.129.17', '2001:db8::1', '2001:4860::8888', '2606:4700::1111', '::ffff:8.8.8.8'])(
    'allows the public %s',
    (address) => {
      expect(none.refusal(address)).toBeUndefined();
    },
  );

  it('refuses metadata host names by name', () => {
    expect(none.nameRefusal('metadata.google.internal')).toMatch(/metadata/);
    expect(none.nameRefusal('METADATA.google.internal.')).toMatch(/metadata/);
    expect(none.nameRefusal('api.example')).toBeUndefined();
  });
});

describe('destinationRefusal', () => {
  const resolve = resolver({ localhost: ['127.0.0.1', '::1'], 'api.example': ['93.184.215.14'], 'mixed.example': ['93.184.215.14', '10.0.0.5'] });

  it.each([
    ['http://169.254.169.254/latest/meta-data', /never reachable/],
    ['http://[::ffff:169.254.169.254]/', /never reachable/],
    ['http://2852039166/', /never reachable/],
    ['http://0251.0376.0251.0376/', /never reachable/],
    ['http://0xa9fea9fe/', /never reachable/],
    ['http://0/', /never reachable/],
    ['http://[::]/', /never reachable/],
    ['http://[fe80::1]/', /never reachable/],
    ['http://metadata.google.internal/computeMetadata/v1/', /metadata/],
    ['http://127.0.0.1:8080/', /outside/],
    ['http://2130706433/', /outside/],
    ['http://[::1]/', /outside/],
    ['http://10.0.0.1/', /outside/],
    ['https://localhost/', /localhost resolves to .*outside/],
    ['https://mixed.example/', /mixed.example resolves to 10.0.0.5/],
  ])('refuses %s', async (url, message) => {
    expect(await destinationRefusal(url, none, resolve)).toMatch(message);
  });

  it('accepts public hosts, loopback where allowed, and names that do not resolve yet (checked again at connect time)', async () => {
    expect(await destinationRefusal('https://api.example/v1', none, resolve)).toBeUndefined();
    expect(await destinationRefusal('https://localhost:8443/', loopback, resolve)).toBeUndefined();
    expect(await destinationRefusal('https://nowhere.example/', none, resolve)).toBeUndefined();
  });

  it('names base_url and credential.token_url', async () => {
    expect(
      await destinationErrors(
        {
          base_url: 'http://169.254.169.254/',
          credential: { type: 'oauth2_client_credentials', token_url: 'http://[::ffff:a9fe:a9fe]/token' },
        },
        none,
        resolve,
      ),
    ).toEqual([
      { field: 'base_url', message: expect.stringMatching(/^must not point at this destination: /) },
      { field: 'credential.token_url', message: expect.stringMatching(/^must not point at this destination: /) },
    ]);
    expect(await destinationErrors({ credential: null }, none, resolve)).toEqual([]);
    expect(
      await destinationErrors(
        {
          credential: {
            type: 'oauth2_authorization_code',
            authorization_url: 'http://10.0.0.1/authorize',
            token_url: 'http://169.254.169.254/token',
            revocation_url: 'http://127.0.0.1/revoke',
          },
        },
        none,
        resolve,
      ),
    ).toEqual([
      { field: 'credential.token_url', message: expect.stringMatching(/never reachable/) },
      { field: 'credential.revocation_url', message: expect.stringMatching(/outside/) },
    ]);
  });
});
