import type { ConnectorDetail, ConnectorOperation } from '@writ/database';
import { budgetRules, limitRuleName, validateTaskLimits } from './task-limits';

const create: ConnectorOperation = {
  name: 'payouts.create',
  method: 'POST',
  path: '/v1/payouts',
  risk: 'write',
  constraints: { amount_max: { in: 'body', field: 'amount', op: 'lte' }, currency: { in: 'body', field: 'currency', op: 'eq' } },
};
const entry: ConnectorDetail = { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { amount_max: 500, currency: 'usd' } };
const check = (raw: unknown) => validateTaskLimits(raw, 'allowed[0].limits', entry, [create]);

describe('validateTaskLimits', () => {
  it('accepts calls and a sum over an lte constraint the entry declares', () => {
    expect(check({ calls: 3, sum: { amount_max: 900.5 } })).toEqual({ limits: { calls: 3, sum: { amount_max: 900.5 } }, problems: [] });
  });

  it.each([
    [null, 'allowed[0].limits'],
    [{}, 'allowed[0].limits'],
    [{ calls: 0 }, 'allowed[0].limits.calls'],
    [{ calls: 2.5 }, 'allowed[0].limits.calls'],
    [{ calls: Number.NaN }, 'allowed[0].limits.calls'],
    [{ calls: 1e12 }, 'allowed[0].limits.calls'],
    [{ calls: 1, extra: 1 }, 'allowed[0].limits.extra'],
    [{ sum: [] }, 'allowed[0].limits.sum'],
    [{ sum: { amount_max: 0 } }, 'allowed[0].limits.sum.amount_max'],
    [{ sum: { amount_max: Infinity } }, 'allowed[0].limits.sum.amount_max'],
    [{ sum: { currency: 5 } }, 'allowed[0].limits.sum.currency'],
    [{ sum: { other: 5 } }, 'allowed[0].limits.sum.other'],
  ])('refuses %p naming %s', (raw, field) => {
    const { limits, problems } = check(raw);
    expect(limits).toBeUndefined();
    expect(problems.map((problem) => problem.field)).toContain(field);
  });

  it('refuses a sum whose constraint is not lte on every action of the entry', () => {
    const refund: ConnectorOperation = { ...create, name: 'refunds.create', constraints: { amount_max: { in: 'body', field: 'amount', op: 'gte' } } };
    const both = { ...entry, actions: ['payouts.create', 'refunds.create'] };
    const { problems } = validateTaskLimits({ sum: { amount_max: 10 } }, 'allowed[0].limits', both, [create, refund]);
    expect(problems).toEqual([{ field: 'allowed[0].limits.sum.amount_max', message: expect.stringContaining('refunds.create') }]);
  });
});

describe('budgetRules', () => {
  it('gives one row per rule of each limited entry, none for the others', () => {
    expect(budgetRules([entry, { ...entry, limits: { calls: 2, sum: { amount_max: 10 } } }])).toEqual([
      { entry: 1, rule: 'calls', maximum: 2 },
      { entry: 1, rule: 'sum:amount_max', maximum: 10 },
    ]);
    expect(limitRuleName('sum:amount_max')).toBe('limit:sum:amount_max');
  });
});
