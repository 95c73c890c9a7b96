import { metadataConnectorId, resourceMetadataUrl, splitGatewayUrl } from './resource-metadata';

describe('resourceMetadataUrl (RFC 9728 §3.1)', () => {
  it('suffixes the well-known segment with the resource path when the gateway URL has none', () => {
    expect(resourceMetadataUrl('https://gw.example', 'tools')).toBe('https://gw.example/.well-known/oauth-protected-resource/connectors/tools');
    expect(resourceMetadataUrl('http://127.0.0.1:4001', 'x')).toBe('http://127.0.0.1:4001/.well-known/oauth-protected-resource/connectors/x');
  });

  it('puts the well-known segment at the host root, before the gateway path', () => {
    expect(resourceMetadataUrl('https://host/gw', 'tools')).toBe('https://host/.well-known/oauth-protected-resource/gw/connectors/tools');
    expect(resourceMetadataUrl('https://host:8443/a/b', 'x')).toBe('https://host:8443/.well-known/oauth-protected-resource/a/b/connectors/x');
  });

  it('splits the gateway URL as written', () => {
    expect(splitGatewayUrl('https://Host.example/gw')).toEqual({ origin: 'https://Host.example', path: '/gw' });
    expect(splitGatewayUrl('https://host/gw/')).toEqual({ origin: 'https://host', path: '/gw' });
    expect(splitGatewayUrl('https://host')).toEqual({ origin: 'https://host', path: '' });
  });
});

describe('metadataConnectorId', () => {
  it('reads connectors/{id}, and {gateway path}/connectors/{id} when the gateway URL has a path', () => {
    expect(metadataConnectorId('https://gw.example', ['connectors', 'tools'])).toBe('tools');
    expect(metadataConnectorId('https://host/gw', ['gw', 'connectors', 'tools'])).toBe('tools');
    expect(metadataConnectorId('https://host/gw', ['connectors', 'tools'])).toBe('tools');
    expect(metadataConnectorId('https://host/a/b', ['a', 'b', 'connectors', 'x'])).toBe('x');
  });

  it('names no connector for another prefix or shape', () => {
    expect(metadataConnectorId('https://gw.example', ['gw', 'connectors', 'tools'])).toBeUndefined();
    expect(metadataConnectorId('https://host/gw', ['other', 'connectors', 'tools'])).toBeUndefined();
    expect(metadataConnectorId('https://host/a/b', ['b', 'connectors', 'x'])).toBeUndefined();
    expect(metadataConnectorId('https://host/gw', ['connectors', 'tools', 'x'])).toBeUndefined();
    expect(metadataConnectorId('https://host/gw', ['tools'])).toBeUndefined();
  });
});
