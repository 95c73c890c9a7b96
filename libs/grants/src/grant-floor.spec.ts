import type { ConnectorDetail, ConnectorOperation } from '@writ/database';
import { FloorConnector, grantFloorViolations } from './grant-floor';

const PAYOUTS: ConnectorOperation = {
  name: 'payouts.create',
  method: 'POST',
  path: '/v1/payouts',
  risk: 'write',
  constraints: {
    destination: { in: 'body', field: 'destination', op: 'eq' },
    amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 1000 },
    amount_min: { in: 'body', field: 'amount', op: 'gte', min: 10 },
    amount_is: { in: 'body', field: 'amount', op: 'eq', min: 0, max: 1000 },
    amounts: { in: 'body', field: 'amount', op: 'in', max: 1000 },
  },
};
const catalogue: FloorConnector[] = [
  { id: 'payments', operations: [PAYOUTS, { name: 'balance.get', method: 'GET', path: '/v1/balance', risk: 'read', constraints: {} }] },
];
const detail = (constraints?: ConnectorDetail['constraints'], actions = ['payouts.create'], connector = 'payments'): ConnectorDetail => ({
  type: 'connector',
  connector,
  actions,
  ...(constraints ? { constraints } : {}),
});
const allowed: ConnectorDetail[] = [detail({ destination: 'acct_1', amount_max: 5000 }), detail(undefined, ['balance.get'])];

describe('grantFloorViolations', () => {
  it('passes a grant inside the task and the catalogue', () => {
    expect(grantFloorViolations([detail({ destination: 'acct_1', amount_max: 1000 })], allowed, catalogue)).toEqual([]);
    expect(grantFloorViolations([detail(undefined, ['balance.get'])], allowed, catalogue)).toEqual([]);
  });

  it('refuses more than one connector or one action', () => {
    const one = ['a credential covers exactly one connector and one action'];
    expect(grantFloorViolations([detail({ destination: 'acct_1' }), detail(undefined, ['balance.get'])], allowed, catalogue)).toEqual(one);
    expect(grantFloorViolations([detail(undefined, ['payouts.create', 'balance.get'])], allowed, catalogue)).toEqual(one);
    expect(grantFloorViolations([], allowed, catalogue)).toEqual(one);
  });

  it('refuses an operation or a connector outside the catalogue', () => {
    expect(grantFloorViolations([detail(undefined, ['payouts.delete'])], allowed, catalogue)).toEqual([
      'operation payouts.delete is not in the catalogue of connector payments',
    ]);
    expect(grantFloorViolations([detail(undefined, ['balance.get'], 'bank')], allowed, catalogue)).toEqual([
      'operation balance.get is not in the catalogue of connector bank',
    ]);
  });

  it('refuses a grant wider than the task declared', () => {
    const violations = grantFloorViolations([detail({ destination: 'acct_2', amount_max: 10 })], allowed, catalogue);
    expect(violations).toEqual([expect.stringMatching(/destination/)]);
  });

  it.each([
    ['lte above max', { amount_max: 1001 }, 'amount_max'],
    ['gte below min', { amount_min: 9 }, 'amount_min'],
    ['eq outside the range', { amount_is: 2000 }, 'amount_is'],
    ['in with one value outside', { amounts: [1, 1001] }, 'amounts'],
    ['a bounded constraint granted a string', { amount_max: '5' }, 'amount_max'],
  ])('refuses a grant beyond the catalogue bounds: %s', (_case, constraints, name) => {
    const violations = grantFloorViolations([detail(constraints)], [detail(constraints)], catalogue);
    expect(violations).toContainEqual(expect.stringMatching(new RegExp(`^constraint ${name} .*outside the catalogue's bounds of payouts.create`)));
  });

  it('passes bounded values at the bounds, and unbounded operators as the task allows', () => {
    const atBounds = { amount_max: 1000, amount_min: 10, amount_is: 0, amounts: [0, 1000] };
    expect(grantFloorViolations([detail(atBounds)], [detail(atBounds)], catalogue)).toEqual([]);
    // An `lte` grant below `min` admits no value past the catalogue's maximum: the gateway refuses each call below min.
    expect(grantFloorViolations([detail({ amount_max: -5 })], [detail({ amount_max: -5 })], catalogue)).toEqual([]);
  });

  it.each([
    ['the literal declared first', 'literal'],
    ['the parameter declared first', 'parameter'],
  ])("refuses a path value that is another operation's path (%s)", (_order, first) => {
    const get: ConnectorOperation = {
      name: 'items.get',
      method: 'GET',
      path: '/items/{id}',
      risk: 'read',
      constraints: { item: { in: 'path', field: 'id', op: 'eq' }, items: { in: 'path', field: 'id', op: 'in' } },
    };
    const exportOp: ConnectorOperation = { name: 'items.export', method: 'GET', path: '/items/export', risk: 'write', constraints: {} };
    const connectors: FloorConnector[] = [{ id: 'items', operations: first === 'literal' ? [exportOp, get] : [get, exportOp] }];
    const grant = (constraints: ConnectorDetail['constraints']): ConnectorDetail[] => [
      { type: 'connector', connector: 'items', actions: ['items.get'], constraints },
    ];
    const check = (constraints: ConnectorDetail['constraints']) => grantFloorViolations(grant(constraints), grant(constraints), connectors);
    expect(check({ item: 'export' })).toEqual([
      'constraint item (eq "export") gives /items/{id} a path of operation items.export (/items/export), not of items.get: the gateway runs the most specific operation a path matches',
    ]);
    expect(check({ items: ['item_1', 'export'] })).toEqual([expect.stringMatching(/^constraint items \(in \["item_1","export"\]\) .* items\.export/)]);
    // Other values, and the same value on another method, are this operation's.
    expect(check({ item: 'item_1', items: ['item_1', 'exports'] })).toEqual([]);
    const posted = [{ id: 'items', operations: [get, { ...exportOp, method: 'POST' }] }];
    expect(grantFloorViolations(grant({ item: 'export' }), grant({ item: 'export' }), posted)).toEqual([]);
  });
});
