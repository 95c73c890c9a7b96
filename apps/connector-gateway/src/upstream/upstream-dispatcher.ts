import { Agent } from 'undici';
import type { WritConfig } from '@writ/config';

/** Injection token of the gateway's undici dispatcher (connection pools to upstreams). */
export const UPSTREAM_DISPATCHER = Symbol('UPSTREAM_DISPATCHER');

/**
 * The dispatcher for upstream calls: keep-alive pools per origin, a bounded connect timeout,
 * and header/body timeouts within the total. Redirects are never followed (undici's
 * `request` does not, and no redirect interceptor is installed), so the injected credential
 * only ever goes to the connector's own origin.
 */
export function createUpstreamDispatcher(config: WritConfig): Agent {
  return new Agent({
    connect: { timeout: config.upstreamConnectTimeoutMs },
    headersTimeout: config.upstreamTimeoutMs,
    bodyTimeout: config.upstreamTimeoutMs,
    keepAliveTimeout: 10_000,
    connections: 128,
  });
}
