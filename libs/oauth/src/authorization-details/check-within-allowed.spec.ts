import type { ConnectorAuthorizationDetail, ConstraintOperator, ConstraintOperatorLookup } from './authorization-details.types';
import { checkWithinAllowed, isConstraintWithin, isValidConstraintValue } from './check-within-allowed';

/** The contract's example catalogue. */
const CATALOGUE: Record<string, Record<string, Record<string, ConstraintOperator>>> = {
  payments: {
    'payouts.create': { destination: 'eq', amount_max: 'lte', currency: 'eq', currencies: 'in', min_delay: 'gte' },
    'payouts.list': { currency: 'eq' },
    'payouts.cancel': {},
    // A catalogue mistake the check must not paper over: same name, another operator.
    'payouts.refund': { amount_max: 'gte' },
  },
  github: {
    'repo.issues.list': { repo: 'eq' },
  },
};

const operators: ConstraintOperatorLookup = (connector, action, name) => CATALOGUE[connector]?.[action]?.[name];

function detail(
  connector: string,
  actions: string[],
  constraints?: ConnectorAuthorizationDetail['constraints'],
  locations?: string[],
): ConnectorAuthorizationDetail {
  return { type: 'connector', connector, actions, constraints, locations };
}

const taskAllowed = [
  detail('payments', ['payouts.create', 'payouts.list'], { destination: 'acct_1', amount_max: 50000, currency: 'usd' }),
  detail('github', ['repo.issues.list'], { repo: 'writ' }),
];

describe('isConstraintWithin', () => {
  const table: Array<[ConstraintOperator, unknown, unknown, boolean]> = [
    // eq
    ['eq', 'acct_1', 'acct_1', true],
    ['eq', 'acct_1', 'acct_2', false],
    ['eq', 50000, 50000, true],
    ['eq', 50000, '50000', false],
    ['eq', '50000', 50000, false],
    ['eq', true, true, true],
    ['eq', true, 'true', false],
    ['eq', 'usd', ['usd'], false],
    ['eq', ['a', 'b'], ['a', 'b'], true],
    ['eq', ['a', 'b'], ['a'], false],
    ['eq', 'x', null, false],
    ['eq', 'x', undefined, false],
    // lte: requested ≤ declared
    ['lte', 50000, 50000, true],
    ['lte', 50000, 49999, true],
    ['lte', 50000, 0, true],
    ['lte', 50000, -5, true],
    ['lte', 50000, 50000.000001, false],
    ['lte', 50000, 50001, false],
    ['lte', 50000, '50000', false],
    ['lte', 50000, '1', false],
    ['lte', '50000', 1, false],
    ['lte', 50000, true, false],
    ['lte', 50000, [1], false],
    ['lte', 50000, null, false],
    ['lte', 50000, NaN, false],
    ['lte', 50000, -Infinity, false],
    ['lte', Infinity, 1, false],
    // gte: requested ≥ declared
    ['gte', 60, 60, true],
    ['gte', 60, 61, true],
    ['gte', 60, 59.9, false],
    ['gte', 60, '61', false],
    ['gte', 60, Infinity, false],
    ['gte', 60, false, false],
    // in: requested array ⊆ declared array
    ['in', ['usd', 'eur'], ['usd'], true],
    ['in', ['usd', 'eur'], ['usd', 'eur'], true],
    ['in', ['usd', 'eur'], ['eur', 'usd'], true],
    ['in', ['usd', 'eur'], [], true],
    ['in', ['usd', 'eur'], ['usd', 'gbp'], false],
    ['in', ['usd', 'eur'], 'usd', false],
    ['in', [1, 2], [1], true],
    ['in', [1, 2], ['1'], false],
    ['in', ['1'], [1], false],
    ['in', 'usd', ['usd'], false],
    ['in', ['usd'], [['usd']], false],
    ['in', ['usd'], [true], false],
  ];

  it.each(table)('%s declared %p, requested %p → %p', (op, declared, requested, expected) => {
    expect(isConstraintWithin(op, declared, requested)).toBe(expected);
  });

  it('refuses an unknown operator', () => {
    expect(isConstraintWithin('neq' as ConstraintOperator, 1, 1)).toBe(false);
  });
});

describe('isValidConstraintValue', () => {
  it.each([
    ['eq', 'x', true],
    ['eq', [1, 'a'], true],
    ['eq', {}, false],
    ['lte', 1, true],
    ['lte', '1', false],
    ['gte', NaN, false],
    ['in', ['a'], true],
    ['in', 'a', false],
  ] as Array<[ConstraintOperator, unknown, boolean]>)('%s %p → %p', (op, value, expected) => {
    expect(isValidConstraintValue(op, value)).toBe(expected);
  });
});

describe('checkWithinAllowed', () => {
  it('accepts the exact allowed entry', () => {
    expect(checkWithinAllowed(taskAllowed[0], taskAllowed, operators)).toEqual({ within: true, violations: [] });
  });

  it('accepts a narrower request: fewer actions, lower amount', () => {
    const requested = detail('payments', ['payouts.create'], { destination: 'acct_1', amount_max: 100, currency: 'usd' });
    expect(checkWithinAllowed(requested, taskAllowed, operators).within).toBe(true);
  });

  it('accepts the lte boundary and refuses one cent above', () => {
    const at = detail('payments', ['payouts.create'], { destination: 'acct_1', amount_max: 50000, currency: 'usd' });
    const above = detail('payments', ['payouts.create'], { destination: 'acct_1', amount_max: 50000.01, currency: 'usd' });
    expect(checkWithinAllowed(at, taskAllowed, operators).within).toBe(true);
    expect(checkWithinAllowed(above, taskAllowed, operators)).toEqual({
      within: false,
      violations: ['constraint "amount_max" is wider than the task allows'],
    });
  });

  it('refuses "50000" for a declared 50000 (type confusion is wider)', () => {
    const requested = detail('payments', ['payouts.create'], { destination: 'acct_1', amount_max: '50000', currency: 'usd' });
    expect(checkWithinAllowed(requested, taskAllowed, operators).violations).toEqual(['constraint "amount_max" is wider than the task allows']);
  });

  it('refuses an action outside the allowed entry', () => {
    const requested = detail('payments', ['payouts.create', 'payouts.cancel'], {
      destination: 'acct_1',
      amount_max: 1,
      currency: 'usd',
    });
    expect(checkWithinAllowed(requested, taskAllowed, operators)).toEqual({
      within: false,
      violations: ['action "payouts.cancel" is not allowed by the task for connector "payments"'],
    });
  });

  it('refuses a connector the task does not list', () => {
    expect(checkWithinAllowed(detail('slack', ['chat.post']), taskAllowed, operators)).toEqual({
      within: false,
      violations: ['connector "slack" is not allowed by the task'],
    });
  });

  it('refuses when a declared constraint is missing from the request (absent means unbounded)', () => {
    const requested = detail('payments', ['payouts.create'], { destination: 'acct_1', currency: 'usd' });
    expect(checkWithinAllowed(requested, taskAllowed, operators).violations).toEqual(['constraint "amount_max" is required by the task']);
  });

  it('refuses a request with no constraints at all against a constrained entry', () => {
    const violations = checkWithinAllowed(detail('payments', ['payouts.list']), taskAllowed, operators).violations;
    expect(violations).toHaveLength(3);
  });

  it('refuses another destination for eq', () => {
    const requested = detail('payments', ['payouts.create'], { destination: 'acct_2', amount_max: 1, currency: 'usd' });
    expect(checkWithinAllowed(requested, taskAllowed, operators).violations).toEqual(['constraint "destination" is wider than the task allows']);
  });

  it("compares a declared constraint the requested actions do not use with the task operations' operator", () => {
    // payouts.list has no amount_max: its operator comes from payouts.create in the allowed entry.
    const ok = detail('payments', ['payouts.list'], { destination: 'acct_1', amount_max: 10, currency: 'usd' });
    const wider = detail('payments', ['payouts.list'], { destination: 'acct_1', amount_max: 60000, currency: 'usd' });
    expect(checkWithinAllowed(ok, taskAllowed, operators).within).toBe(true);
    expect(checkWithinAllowed(wider, taskAllowed, operators).within).toBe(false);
  });

  it('accepts an extra narrowing constraint known to the catalogue', () => {
    const requested = detail('payments', ['payouts.create'], {
      destination: 'acct_1',
      amount_max: 1,
      currency: 'usd',
      currencies: ['usd'],
    });
    expect(checkWithinAllowed(requested, taskAllowed, operators).within).toBe(true);
  });

  it('refuses a requested constraint that has no operator', () => {
    const requested = detail('payments', ['payouts.create'], {
      destination: 'acct_1',
      amount_max: 1,
      currency: 'usd',
      bypass: true,
    });
    expect(checkWithinAllowed(requested, taskAllowed, operators).violations).toEqual(['constraint "bypass" is not defined for the requested actions']);
  });

  it('refuses an extra constraint whose value cannot work with its operator', () => {
    const requested = detail('payments', ['payouts.create'], {
      destination: 'acct_1',
      amount_max: 1,
      currency: 'usd',
      currencies: 'usd',
    });
    expect(checkWithinAllowed(requested, taskAllowed, operators).violations).toEqual(['constraint "currencies" has a value that is not valid for operator in']);
  });

  it('refuses a constraint whose operator differs across the requested actions', () => {
    const allowed = [detail('payments', ['payouts.create', 'payouts.refund'], { amount_max: 100 })];
    const requested = detail('payments', ['payouts.create', 'payouts.refund'], { amount_max: 100 });
    expect(checkWithinAllowed(requested, allowed, operators).violations).toEqual([
      'constraint "amount_max" has conflicting operators across the requested actions',
    ]);
  });

  it('checks gte and in declared constraints', () => {
    const allowed = [detail('payments', ['payouts.create'], { min_delay: 60, currencies: ['usd', 'eur'] })];
    expect(checkWithinAllowed(detail('payments', ['payouts.create'], { min_delay: 120, currencies: ['eur'] }), allowed, operators).within).toBe(true);
    expect(checkWithinAllowed(detail('payments', ['payouts.create'], { min_delay: 30, currencies: ['gbp'] }), allowed, operators).violations).toEqual([
      'constraint "min_delay" is wider than the task allows',
      'constraint "currencies" is wider than the task allows',
    ]);
  });

  it('must fit ONE allowed entry, not a union of several', () => {
    const allowed = [detail('payments', ['payouts.create'], { destination: 'acct_1', amount_max: 100, currency: 'usd' }), detail('payments', ['payouts.list'])];
    const requested = detail('payments', ['payouts.create', 'payouts.list'], {
      destination: 'acct_1',
      amount_max: 100,
      currency: 'usd',
    });
    expect(checkWithinAllowed(requested, allowed, operators).within).toBe(false);
    expect(checkWithinAllowed(detail('payments', ['payouts.list']), allowed, operators).within).toBe(true);
  });

  it('reports the violations of the closest entry', () => {
    const allowed = [
      detail('payments', ['payouts.cancel']),
      detail('payments', ['payouts.create'], { destination: 'acct_1', amount_max: 100, currency: 'usd' }),
    ];
    const requested = detail('payments', ['payouts.create'], { destination: 'acct_1', amount_max: 500, currency: 'usd' });
    expect(checkWithinAllowed(requested, allowed, operators).violations).toEqual(['constraint "amount_max" is wider than the task allows']);
  });

  it("checks locations against the entry's locations", () => {
    const url = 'http://localhost:4001/connectors/github';
    const allowed = [detail('github', ['repo.issues.list'], { repo: 'writ' }, [url])];
    expect(checkWithinAllowed(detail('github', ['repo.issues.list'], { repo: 'writ' }, [url]), allowed, operators).within).toBe(true);
    expect(checkWithinAllowed(detail('github', ['repo.issues.list'], { repo: 'writ' }, ['https://evil.example']), allowed, operators).violations).toEqual([
      "locations are not within the task's allowed locations",
    ]);
    expect(checkWithinAllowed(detail('github', ['repo.issues.list'], { repo: 'writ' }, [url]), taskAllowed, operators).within).toBe(false);
  });

  it('does not accept a forged type', () => {
    const forged = { ...taskAllowed[0], type: 'other' } as unknown as ConnectorAuthorizationDetail;
    expect(checkWithinAllowed(forged, taskAllowed, operators).within).toBe(false);
  });

  it('is not fooled by inherited properties in constraints', () => {
    const allowed = [detail('github', ['repo.issues.list'], { repo: 'writ' })];
    const requested = detail('github', ['repo.issues.list'], Object.create({ repo: 'writ' }) as Record<string, string>);
    expect(checkWithinAllowed(requested, allowed, operators).violations).toEqual(['constraint "repo" is required by the task']);
  });

  it('refuses everything against an empty allowed list', () => {
    expect(checkWithinAllowed(taskAllowed[0], [], operators).within).toBe(false);
  });
});
