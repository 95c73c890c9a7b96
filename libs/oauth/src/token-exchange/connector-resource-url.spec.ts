import { connectorResourceUrl, foreignLocations } from './connector-resource-url';

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

describe('foreignLocations', () => {
  const detail = (locations?: string[]) => ({ type: 'connector' as const, connector: 'payments', actions: ['payouts.create'], locations });

  it('accepts no locations and the connector URL', () => {
    expect(foreignLocations('http://localhost:4001/', detail())).toEqual([]);
    expect(foreignLocations('http://localhost:4001/', detail(['http://localhost:4001/connectors/payments']))).toEqual([]);
  });

  it.each([
    'https://elsewhere.example/api',
    'http://localhost:4001/connectors/github',
    'http://localhost:4001/connectors/payments/',
    'http://localhost:4001/connectors/payments/v1/payouts',
    'HTTP://localhost:4001/connectors/payments',
  ])('names %s as foreign', (location) => {
    expect(foreignLocations('http://localhost:4001', detail(['http://localhost:4001/connectors/payments', location]))).toEqual([1]);
  });
});
