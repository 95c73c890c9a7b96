/** Where the gateway serves a connector's protected resource metadata (RFC 9728 §3.1: the resource path, suffixed). */
export function resourceMetadataUrl(gatewayUrl: string, connectorId: string): string {
  return `${gatewayUrl}/.well-known/oauth-protected-resource/connectors/${connectorId}`;
}
