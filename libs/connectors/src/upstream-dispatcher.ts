import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { Agent, buildConnector } from 'undici';
import type { WritConfig } from '@writ/config';
import { hostOf, UpstreamNetworks } from './upstream-destination';

/** Injection token of the gateway's undici dispatcher (connection pools to upstreams). */
export const UPSTREAM_DISPATCHER = Symbol('UPSTREAM_DISPATCHER');

/** The error code of a connection the destination check refused (mapped to `502`, reason `upstream_address_refused`). */
export const UPSTREAM_ADDRESS_REFUSED = 'WRIT_UPSTREAM_ADDRESS_REFUSED';

/** A connection refused because its host is, or resolves to, an address the gateway may not reach. */
export class UpstreamAddressRefusedError extends Error {
  readonly code = UPSTREAM_ADDRESS_REFUSED;
  constructor(
    readonly host: string,
    readonly refusal: string,
  ) {
    super(`the upstream host ${host} is not reachable from the gateway: ${refusal}`);
    this.name = 'UpstreamAddressRefusedError';
  }
}

/**
 * Why a connector's `base_url` may not be reached, judged on its host alone: an address
 * literal outside the allowed networks or a metadata name. Lets the gateway refuse before a
 * use is spent; host names are checked on their resolved addresses when connecting.
 */
export function literalDestinationRefusal(networks: UpstreamNetworks, baseUrl: string): string | undefined {
  let host: string;
  try {
    host = hostOf(baseUrl);
  } catch {
    return 'its base_url is not a URL';
  }
  return isIP(host) !== 0 ? networks.refusal(host) : networks.nameRefusal(host);
}

/** `dns.lookup`'s signature, so tests can give their own resolver. */
export type LookupFunction = (
  hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
) => void;

/**
 * A `lookup` for the sockets to upstreams that resolves, refuses the connection if any
 * address is not allowed, and hands the socket only addresses that were checked: the address
 * connected to is the address checked, so DNS rebinding between registration and the call
 * (or between two calls) reaches nothing it should not.
 */
export function guardedLookup(networks: UpstreamNetworks, resolve: LookupFunction = dnsLookup as LookupFunction): LookupFunction {
  return (hostname, options, callback) => {
    const named = networks.nameRefusal(hostname);
    if (named) return callback(new UpstreamAddressRefusedError(hostname, named), []);
    resolve(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, []);
      const list = (Array.isArray(addresses) ? addresses : [{ address: addresses, family: isIP(addresses) }]) as LookupAddress[];
      if (list.length === 0) return callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), []);
      for (const { address } of list) {
        const refused = networks.refusal(address);
        if (refused) return callback(new UpstreamAddressRefusedError(hostname, refused), []);
      }
      if (options.all) return callback(null, list);
      callback(null, list[0].address, list[0].family);
    });
  };
}

/**
 * The dispatcher for upstream calls: keep-alive pools per origin, a bounded connect timeout,
 * and header/body timeouts within the total. Every new connection is checked against
 * `WRIT_UPSTREAM_ALLOWED_NETWORKS` on the address actually connected to: an IP-literal host
 * before connecting, a host name through {@link guardedLookup}. Redirects are never
 * followed (undici's `request` does not, and no redirect interceptor is installed), so the
 * injected credential only ever goes to the connector's own origin.
 */
export function createUpstreamDispatcher(config: WritConfig, resolve?: LookupFunction): Agent {
  const networks = new UpstreamNetworks(config.upstreamAllowedNetworks);
  const connector = buildConnector({ timeout: config.upstreamConnectTimeoutMs, lookup: guardedLookup(networks, resolve) } as buildConnector.BuildOptions);
  return new Agent({
    connect: (options, callback) => {
      const host = options.hostname.replace(/^\[(.*)\]$/, '$1');
      if (isIP(host) !== 0) {
        const refused = networks.refusal(host);
        if (refused) return callback(new UpstreamAddressRefusedError(host, refused), null);
      }
      return connector(options, callback);
    },
    headersTimeout: config.upstreamTimeoutMs,
    bodyTimeout: config.upstreamTimeoutMs,
    keepAliveTimeout: 10_000,
    connections: 128,
  });
}
