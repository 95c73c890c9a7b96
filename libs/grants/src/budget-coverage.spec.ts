import type { ConstraintOperatorLookup } from '@writ/oauth';
import { limitedEntriesCovering } from './budget-coverage';
import type { DeclaredEntry } from './task-limits';

const operators: ConstraintOperatorLookup = (_connector, action, name) =>
  action === 'payouts.create' ? ({ amount_max: 'lte', destination: 'eq' } as const)[name as 'amount_max' | 'destination'] : undefined;
const payout = (amountMax: number, limits?: DeclaredEntry['limits']): DeclaredEntry => ({
  type: 'connector',
  connector: 'payments',
  actions: ['payouts.create'],
  constraints: { destination: 'acct_1', amount_max: amountMax },
  ...(limits ? { limits } : {}),
});

describe('limitedEntriesCovering', () => {
  const allowed: DeclaredEntry[] = [
    payout(1000),
    payout(500, { calls: 2 }),
    payout(5000, { sum: { amount_max: 9000 } }),
    { type: 'connector', connector: 'github', actions: ['issues.list'], limits: { calls: 1 } },
  ];

  it('charges every limited entry that covers the grant, not only the first', () => {
    expect(
      limitedEntriesCovering(
        { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 400 } },
        allowed,
        operators,
      ),
    ).toEqual([1, 2]);
  });

  it('skips limited entries that do not cover the grant', () => {
    expect(
      limitedEntriesCovering(
        { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 900 } },
        allowed,
        operators,
      ),
    ).toEqual([2]);
    expect(
      limitedEntriesCovering(
        { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_2', amount_max: 1 } },
        allowed,
        operators,
      ),
    ).toEqual([]);
  });

  it('charges a limited entry whatever the locations (only ever the connector itself): naming one does not escape to an unlimited entry that names it', () => {
    const located = 'https://gateway.example/connectors/payments';
    const withLocation = (entry: DeclaredEntry): DeclaredEntry => ({ ...entry, locations: [located] });
    const tasks: DeclaredEntry[] = [payout(1000, { sum: { amount_max: 3000 } }), withLocation(payout(1000))];
    const asked = { type: 'connector' as const, connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_1', amount_max: 1000 } };
    expect(limitedEntriesCovering(asked, tasks, operators)).toEqual([0]);
    expect(limitedEntriesCovering({ ...asked, locations: [located] }, tasks, operators)).toEqual([0]);
    // A limited entry that names the location covers a detail that names none, as before.
    expect(limitedEntriesCovering(asked, [withLocation(payout(1000, { calls: 1 }))], operators)).toEqual([0]);
  });
});
