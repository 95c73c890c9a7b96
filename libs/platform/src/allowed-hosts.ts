import type { NextFunction, Request, Response } from 'express';
import { isIP } from 'node:net';
import { AllowedHostsConfig, HostName, parseHostName } from '@writ/config';
import type { HostRefusal } from './metrics';

/** Paths answered whatever `Host` says: probes call by address, and these say nothing of use to a page. */
export const ANY_HOST_PATHS: ReadonlySet<string> = new Set(['/health/live', '/health/ready']);

/** Whether `host` is one of the names `allowed` accepts (see WritConfig.allowedHosts). */
export function hostAllowed(allowed: AllowedHostsConfig, host: HostName): boolean {
  if (allowed.names.includes(host.name)) return true;
  if (host.port !== undefined && allowed.namesWithPort.includes(`${host.name}:${host.port}`)) return true;
  if (!allowed.loopbackNames) return false;
  // A DNS-rebinding page sends its own DNS name: an IP literal or a `localhost` name (which
  // browsers resolve to loopback themselves, RFC 6761) cannot be one.
  return host.name === 'localhost' || host.name.endsWith('.localhost') || host.name.startsWith('[') || isIP(host.name) === 4;
}

/**
 * Refuses a request whose `Host` is not a name of this service (`WRIT_ALLOWED_HOSTS`), before any
 * other work: `421 Misdirected Request` (RFC 9110 section 15.5.20: this server is not the origin
 * the request names), or `400` naming `Host` when it is missing or not a `host[:port]`. A page
 * that rebinds its own DNS name to a Writ service in a user's browser is same-origin with it
 * (no `Sec-Fetch-Site: cross-site`); without this its tokenless requests would be answered, and
 * counted as failed authentications of the user's own address. `undefined`: any `Host`.
 * `onRefused` counts each refusal by its reason (never by the value: it is the caller's).
 */
export function refuseOtherHosts(
  allowed: AllowedHostsConfig | undefined,
  onRefused: (reason: HostRefusal) => void = () => undefined,
): ((req: Request, res: Response, next: NextFunction) => void) | undefined {
  if (!allowed) return undefined;
  return (req, res, next) => {
    const header = req.headers.host;
    const host = typeof header === 'string' ? parseHostName(header) : undefined;
    if (host && hostAllowed(allowed, host)) return next();
    // The raw target (Express's `req.path` throws on a target that is no URL).
    const path = (req.url ?? '').split('?')[0];
    if (ANY_HOST_PATHS.has(path) && (req.method === 'GET' || req.method === 'HEAD')) return next();
    // The value is not echoed: it is the caller's, and names nothing Writ needs to repeat.
    if (!host) {
      onRefused('malformed');
      res.status(400).json({ error: 'invalid_request', error_description: 'the Host header is missing or is not a host[:port]' });
    } else {
      onRefused('not_allowed');
      res.status(421).json({ error: 'misdirected_request', error_description: 'the Host header names no host this service answers for (WRIT_ALLOWED_HOSTS)' });
    }
  };
}
