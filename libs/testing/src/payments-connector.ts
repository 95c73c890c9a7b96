import type { ConnectorOperation } from '@writ/database';

/** `payouts.create` of the contract's example payments connector: destination, amount and currency constrained. */
export const PAYOUTS_CREATE: ConnectorOperation = {
  name: 'payouts.create',
  method: 'POST',
  path: '/v1/payouts',
  risk: 'write',
  constraints: {
    destination: { in: 'body', field: 'destination', op: 'eq' },
    amount_max: { in: 'body', field: 'amount', op: 'lte' },
    currency: { in: 'body', field: 'currency', op: 'eq' },
  },
};

/** The payments connector of the contract's example (the suites', the benchmarks' and the demo's fixture). */
export const PAYMENTS_OPERATIONS: ConnectorOperation[] = [
  PAYOUTS_CREATE,
  { name: 'payouts.get', method: 'GET', path: '/v1/payouts/{payout_id}', risk: 'read', constraints: { payout: { in: 'path', field: 'payout_id', op: 'eq' } } },
  { name: 'payouts.refund', method: 'POST', path: '/v1/payouts/{payout_id}/refund', risk: 'write', constraints: {} },
];
