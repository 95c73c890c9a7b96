import { CONNECTOR_ID_PATTERN } from '../authorization-details/authorization-details.types';

/**
 * The resource URL of a connector, `WRIT_GATEWAY_URL/connectors/ID`: the token's `aud`
 * and the only `resource` accepted for it. A trailing slash on the gateway URL is ignored.
 */
export function connectorResourceUrl(gatewayUrl: string, connectorId: string): string {
  if (!CONNECTOR_ID_PATTERN.test(connectorId)) throw new TypeError('invalid connector identifier');
  return `${gatewayUrl.replace(/\/+$/, '')}/connectors/${connectorId}`;
}
