import { GatewayPathError } from './errors.js';

const CONNECTOR_ID = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
// Escapes of `.`, `/`, `\` and `%` (any case): encoded or double-encoded traversal.
const ENCODED_SEPARATOR = /%(2e|2f|5c|25|00)/i;
// Controls, space, and what would end or break the path: fragments, backslashes.
const FORBIDDEN_CHARACTER = /[\u0000-\u0020\u007f#\\]/;

/**
 * The gateway URL for `path` under a connector, or a {@link GatewayPathError}: the path must
 * be relative to the connector (`/v1/payouts?limit=5`), so that a credential is never sent
 * anywhere but this gateway and this connector. Refused: absolute URLs, protocol-relative
 * `//host`, `.`/`..` and empty segments (plain or percent-encoded), backslashes, fragments,
 * control characters. The gateway refuses the same targets; refusing them here means the
 * credential does not leave the agent for them at all.
 */
export function gatewayUrlFor(gatewayUrl: string, connector: string, path: string): URL {
  if (!CONNECTOR_ID.test(connector)) throw new GatewayPathError(`invalid connector id ${JSON.stringify(connector)}`);
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new GatewayPathError('the path must be relative to the connector and start with "/" (absolute URLs are refused)');
  }
  if (path.startsWith('//')) throw new GatewayPathError('protocol-relative paths ("//host") are refused');
  if (FORBIDDEN_CHARACTER.test(path)) throw new GatewayPathError('the path contains a control character, a space, "#" or "\\"');
  const queryAt = path.indexOf('?');
  const pathname = queryAt === -1 ? path : path.slice(0, queryAt);
  if (ENCODED_SEPARATOR.test(pathname)) throw new GatewayPathError('encoded ".", "/", "\\", "%" or NUL in the path are refused');
  const segments = pathname.slice(1).split('/');
  for (const [index, segment] of segments.entries()) {
    if (segment === '.' || segment === '..') throw new GatewayPathError('"." and ".." segments are refused');
    if (segment === '' && index !== segments.length - 1) throw new GatewayPathError('empty path segments are refused');
  }
  const base = new URL(gatewayUrl);
  const prefix = `${base.pathname.replace(/\/+$/, '')}/connectors/${connector}`;
  const url = new URL(`${base.origin}${prefix}${path}`);
  // Belt and braces: whatever the URL parser made of it, it must still be under the connector.
  if (url.origin !== base.origin || !url.pathname.startsWith(`${prefix}/`) || url.hash) {
    throw new GatewayPathError('the path leaves the connector');
  }
  return url;
}
