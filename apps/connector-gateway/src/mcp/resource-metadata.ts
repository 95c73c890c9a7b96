/** The well-known segment of RFC 9728 protected resource metadata. */
const WELL_KNOWN = '/.well-known/oauth-protected-resource';

/**
 * The origin and the path of `WRIT_GATEWAY_URL` as written (no trailing `/`): `https://host/gw`
 * is `https://host` and `/gw`; a URL without a path has path `''`.
 */
export function splitGatewayUrl(gatewayUrl: string): { origin: string; path: string } {
  const match = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)([^?#]*)$/i.exec(gatewayUrl);
  if (!match) return { origin: gatewayUrl, path: '' };
  return { origin: match[1], path: match[2].replace(/\/+$/, '') };
}

/**
 * Where a connector's protected resource metadata is (RFC 9728 §3.1): the well-known segment
 * goes between the host and the resource's path. For the resource
 * `https://host/gw/connectors/tools` that is
 * `https://host/.well-known/oauth-protected-resource/gw/connectors/tools`, not a URL under
 * `/gw` (a client derives it from the resource identifier, and checks the `resource` it finds).
 */
export function resourceMetadataUrl(gatewayUrl: string, connectorId: string): string {
  const { origin, path } = splitGatewayUrl(gatewayUrl);
  return `${origin}${WELL_KNOWN}${path}/connectors/${connectorId}`;
}

/**
 * The connector id named by a request path under `/.well-known/oauth-protected-resource/`
 * (decoded segments, as the router gives them), or `undefined`: `connectors/{id}`, or
 * `{gateway path}/connectors/{id}` when `WRIT_GATEWAY_URL` has a path (the metadata URL as it
 * reaches the gateway when the reverse proxy routes the host's well-known path to it as is).
 */
export function metadataConnectorId(gatewayUrl: string, segments: readonly string[]): string | undefined {
  if (segments.length < 2 || segments[segments.length - 2] !== 'connectors') return undefined;
  const prefix = segments.slice(0, -2);
  if (prefix.length > 0) {
    const expected = gatewayPathSegments(gatewayUrl);
    if (expected === undefined || prefix.length !== expected.length || prefix.some((segment, index) => segment !== expected[index])) return undefined;
  }
  return segments[segments.length - 1];
}

function gatewayPathSegments(gatewayUrl: string): string[] | undefined {
  try {
    return splitGatewayUrl(gatewayUrl)
      .path.split('/')
      .filter((segment) => segment !== '')
      .map((segment) => decodeURIComponent(segment));
  } catch {
    return undefined;
  }
}
