import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';

/** Why an upstream address may not be reached, in words for an error message (never secret). */
export type DestinationRefusal = string;

/** Host names of cloud metadata services, refused by name before any resolution. */
const METADATA_HOSTS = new Set(['metadata.google.internal', 'metadata.goog', 'metadata', 'instance-data', 'instance-data.ec2.internal']);

/**
 * Never reachable, whatever `WRIT_UPSTREAM_ALLOWED_NETWORKS` says: link-local (where cloud
 * metadata services live), the unspecified and "this network" addresses, multicast and
 * broadcast, the IETF protocol assignments (`192.0.0.0/24`: DS-Lite, NAT64 discovery, PCP
 * and TURN anycast, `192.0.0.192` Oracle Cloud metadata), and the metadata addresses that sit
 * inside private or public ranges (Alibaba `100.100.100.200`, Azure WireServer `168.63.129.16`).
 */
const FORBIDDEN: Array<[string, number, 'ipv4' | 'ipv6']> = [
  ['0.0.0.0', 8, 'ipv4'],
  ['169.254.0.0', 16, 'ipv4'],
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  ['100.100.100.200', 32, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['168.63.129.16', 32, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['fe80::', 10, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
  ['fd00:ec2::254', 128, 'ipv6'],
];

/** Reachable only when `WRIT_UPSTREAM_ALLOWED_NETWORKS` lists them: loopback, private and shared ranges. */
const PRIVATE: Array<[string, number, 'ipv4' | 'ipv6']> = [
  ['127.0.0.0', 8, 'ipv4'],
  ['10.0.0.0', 8, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['::1', 128, 'ipv6'],
  ['fc00::', 7, 'ipv6'],
  ['fec0::', 10, 'ipv6'],
  // IPv4-compatible (deprecated), IPv4-translated (SIIT), NAT64, 6to4 and Teredo forms can reach IPv4 hosts behind the gateway.
  ['::', 96, 'ipv6'],
  ['::ffff:0:0:0', 96, 'ipv6'],
  ['2001::', 32, 'ipv6'],
  ['64:ff9b::', 96, 'ipv6'],
  ['64:ff9b:1::', 48, 'ipv6'],
  ['2002::', 16, 'ipv6'],
];

function blockList(ranges: Array<[string, number, 'ipv4' | 'ipv6']>): BlockList {
  const list = new BlockList();
  for (const [address, prefix, family] of ranges) list.addSubnet(address, prefix, family);
  return list;
}

const FORBIDDEN_LIST = blockList(FORBIDDEN);
const PRIVATE_LIST = blockList(PRIVATE);

/** `::ffff:a.b.c.d` (in any spelling) as `a.b.c.d`; any other address as it is. */
function unmapped(address: string): { address: string; family: 'ipv4' | 'ipv6' } {
  if (isIP(address) === 4) return { address, family: 'ipv4' };
  const lower = address.toLowerCase();
  const dotted = /^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted && isIP(dotted[1]) === 4) return { address: dotted[1], family: 'ipv4' };
  const hex = /^(?:0{0,4}:){0,5}:?ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (hex) {
    const high = parseInt(hex[1], 16);
    const low = parseInt(hex[2], 16);
    return { address: [high >> 8, high & 255, low >> 8, low & 255].join('.'), family: 'ipv4' };
  }
  return { address, family: 'ipv6' };
}

/** The eight 16-bit groups of an IPv6 address (`undefined` for anything else, e.g. a dotted tail already unmapped). */
function hextets(address: string): number[] | undefined {
  let text = address.toLowerCase();
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const octets = dotted[2].split('.').map(Number);
    text = `${dotted[1]}${((octets[0] << 8) | octets[1]).toString(16)}:${((octets[2] << 8) | octets[3]).toString(16)}`;
  }
  const [head, tail, extra] = text.split('::');
  if (extra !== undefined) return undefined;
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const missing = 8 - left.length - right.length;
  if (tail === undefined ? missing !== 0 : missing < 1) return undefined;
  return [...left, ...Array<string>(tail === undefined ? 0 : missing).fill('0'), ...right].map((group) => parseInt(group, 16));
}

/**
 * The IPv4 address an IPv6 address carries when it reaches IPv4 hosts through translation:
 * NAT64 (`64:ff9b::/96`), IPv4-compatible (`::a.b.c.d`), IPv4-translated (SIIT, RFC 7915:
 * `::ffff:0:a.b.c.d`, i.e. `::ffff:0:0:0/96`) and 6to4 (`2002:AABB:CCDD::/48`).
 */
function embeddedIpv4(address: string): string | undefined {
  const groups = hextets(address);
  if (!groups) return undefined;
  const v4 = (high: number, low: number) => [high >> 8, high & 255, low >> 8, low & 255].join('.');
  if (groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((group) => group === 0)) return v4(groups[6], groups[7]);
  if (groups.slice(0, 6).every((group) => group === 0) && (groups[6] !== 0 || groups[7] > 1)) return v4(groups[6], groups[7]);
  if (groups.slice(0, 4).every((group) => group === 0) && groups[4] === 0xffff && groups[5] === 0) return v4(groups[6], groups[7]);
  if (groups[0] === 0x2002) return v4(groups[1], groups[2]);
  return undefined;
}

/**
 * Which upstream addresses the gateway may reach: public addresses always; loopback, private
 * and shared ranges only inside the configured networks (`WRIT_UPSTREAM_ALLOWED_NETWORKS`);
 * link-local and metadata addresses never. IPv4-mapped IPv6 addresses are judged as the IPv4
 * address they carry.
 */
export class UpstreamNetworks {
  private readonly allowed = new BlockList();

  /** @param allowedCidrs normalised CIDRs (`address/prefix`), as `loadConfig` gives them */
  constructor(readonly allowedCidrs: readonly string[]) {
    for (const cidr of allowedCidrs) {
      const [address, prefix] = cidr.split('/');
      this.allowed.addSubnet(address, Number(prefix), isIP(address) === 4 ? 'ipv4' : 'ipv6');
    }
  }

  /** Why `address` (an IP literal) may not be reached, or `undefined` when it may. */
  refusal(address: string): DestinationRefusal | undefined {
    if (isIP(address) === 0) return 'is not an IP address';
    const { address: plain, family } = unmapped(address);
    if (FORBIDDEN_LIST.check(plain, family)) return `${plain} is a link-local, metadata or reserved address (never reachable)`;
    const carried = family === 'ipv6' ? embeddedIpv4(plain) : undefined;
    if (carried && FORBIDDEN_LIST.check(carried, 'ipv4')) return `${plain} carries ${carried}, a link-local, metadata or reserved address (never reachable)`;
    if (PRIVATE_LIST.check(plain, family) && !this.allowed.check(plain, family)) {
      return `${plain} is a loopback or private address outside WRIT_UPSTREAM_ALLOWED_NETWORKS`;
    }
    return undefined;
  }

  /** Why a host name is refused before it is even resolved (metadata service names), if it is. */
  nameRefusal(hostname: string): DestinationRefusal | undefined {
    const name = hostname.toLowerCase().replace(/\.$/, '');
    if (METADATA_HOSTS.has(name)) return `${name} is a cloud metadata service`;
    return undefined;
  }
}

/** A URL's host as an IP literal (brackets removed) or a name; WHATWG parsing has already turned `2852039166` or `0251.0376.0251.0376` into dotted form. */
export function hostOf(url: string): string {
  return new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
}

/** How long registration waits for DNS before accepting a name it will check again at connect time. */
const RESOLVE_TIMEOUT_MS = 3000;

/** Resolves a host name to every address (the shape of `dns.lookup` with `all: true`). */
export type ResolveAll = (hostname: string) => Promise<LookupAddress[]>;

/** `dns.lookup(hostname, {all: true})`, as the gateway's sockets resolve. */
export const resolveAllAddresses: ResolveAll = (hostname) =>
  new Promise((resolve, reject) => dnsLookup(hostname, { all: true, verbatim: true }, (error, addresses) => (error ? reject(error) : resolve(addresses))));

/**
 * Checks where a `base_url` or `token_url` points, at registration: a metadata host name or an
 * address literal outside {@link UpstreamNetworks} is refused; a host name is resolved and
 * every address it resolves to must be allowed. A name that does not resolve (yet, or
 * within 3 s) is accepted: the gateway checks every resolved address again at connect time, which is the
 * check that counts (DNS may change between now and then).
 */
export async function destinationRefusal(
  url: string,
  networks: UpstreamNetworks,
  resolve: ResolveAll = resolveAllAddresses,
): Promise<DestinationRefusal | undefined> {
  let host: string;
  try {
    host = hostOf(url);
  } catch {
    return 'is not a valid URL';
  }
  if (isIP(host) !== 0) return networks.refusal(host);
  const named = networks.nameRefusal(host);
  if (named) return named;
  let addresses: LookupAddress[];
  let timer: NodeJS.Timeout | undefined;
  try {
    addresses = await Promise.race([
      resolve(host),
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error('resolution timed out')), RESOLVE_TIMEOUT_MS);
      }),
    ]);
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
  for (const { address } of addresses) {
    const refused = networks.refusal(address);
    if (refused) return `${host} resolves to ${refused}`;
  }
  return undefined;
}

/**
 * The destination checks of a connector definition or change (`base_url`, the `token_url`
 * of an OAuth credential and the `revocation_url` of an `oauth2_authorization_code` one), as
 * field errors for a `400`.
 */
export async function destinationErrors(
  input: { base_url?: string; credential?: { type: string; token_url?: string; authorization_url?: string; revocation_url?: string } | null },
  networks: UpstreamNetworks,
  resolve: ResolveAll = resolveAllAddresses,
): Promise<Array<{ field: string; message: string }>> {
  const errors: Array<{ field: string; message: string }> = [];
  const check = async (field: string, url: string | undefined) => {
    if (url === undefined) return;
    const refused = await destinationRefusal(url, networks, resolve);
    if (refused) errors.push({ field, message: `must not point at this destination: ${refused}` });
  };
  await check('base_url', input.base_url);
  if (input.credential?.type === 'oauth2_client_credentials') await check('credential.token_url', input.credential.token_url);
  if (input.credential?.type === 'oauth2_authorization_code') {
    // The authorization URL is only ever opened by the user's browser, never by Writ: not checked here.
    await check('credential.token_url', input.credential.token_url);
    await check('credential.revocation_url', input.credential.revocation_url);
  }
  return errors;
}
