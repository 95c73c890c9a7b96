import type { ConnectorAuthorizationDetail } from '../authorization-details/authorization-details.types';
import { CONNECTOR_ID_PATTERN } from '../authorization-details/authorization-details.types';

/**
 * The resource URL of a connector, `WRIT_GATEWAY_URL/connectors/ID`: the token's `aud`
 * and the only `resource` accepted for it. A trailing slash on the gateway URL is ignored.
 */
export function connectorResourceUrl(gatewayUrl: string, connectorId: string): string {
  if (!CONNECTOR_ID_PATTERN.test(connectorId)) throw new TypeError('invalid connector identifier');
  return `${gatewayUrl.replace(/\/+$/, '')}/connectors/${connectorId}`;
}

/**
 * The indexes of an entry's `locations` (RFC 9396 §2.2) that are not its connector's resource
 * URL. A credential's only location is its audience, the connector at the gateway, and nothing
 * else checks `locations`: any other value would be accepted and never enforced, so it is refused.
 */
export function foreignLocations(gatewayUrl: string, detail: ConnectorAuthorizationDetail): number[] {
  const own = connectorResourceUrl(gatewayUrl, detail.connector);
  return (detail.locations ?? []).flatMap((location, index) => (location === own ? [] : [index]));
}
