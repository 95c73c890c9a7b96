import { connectorResourceUrl } from './connector-resource-url';

describe('connectorResourceUrl', () => {
  it('joins the gateway URL and the connector id', () => {
    expect(connectorResourceUrl('http://localhost:4001', 'payments')).toBe('http://localhost:4001/connectors/payments');
  });

  it('ignores trailing slashes on the gateway URL', () => {
    expect(connectorResourceUrl('https://gw.example/base//', 'payments')).toBe('https://gw.example/base/connectors/payments');
  });

  it.each(['../admin', 'Pay', '', 'a/b'])('refuses the connector id %p', (id) => {
    expect(() => connectorResourceUrl('http://localhost:4001', id)).toThrow(TypeError);
  });
});
