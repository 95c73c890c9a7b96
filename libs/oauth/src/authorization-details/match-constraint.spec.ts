import type { ConstraintOperator } from './authorization-details.types';
import { jsonValuesEqual, matchConstraint, parseDecimalString } from './match-constraint';

describe('matchConstraint', () => {
  const table: Array<[ConstraintOperator, unknown, unknown, boolean]> = [
    // eq: strict, no coercion
    ['eq', 'acct_1', 'acct_1', true],
    ['eq', 'acct_1', 'acct_2', false],
    ['eq', 'acct_1', 'ACCT_1', false],
    ['eq', 50000, 50000, true],
    ['eq', 50000, 50000.0, true],
    ['eq', 50000, '50000', false],
    ['eq', '50000', 50000, false],
    ['eq', 1, true, false],
    ['eq', true, true, true],
    ['eq', false, 0, false],
    ['eq', 'usd', ['usd'], false],
    ['eq', ['a', 'b'], ['a', 'b'], true],
    ['eq', ['a', 'b'], ['b', 'a'], false],
    ['eq', 'x', undefined, false],
    ['eq', 'x', null, false],
    ['eq', undefined, undefined, false],
    ['eq', 'x', { toString: () => 'x' }, false],
    ['eq', NaN, NaN, false],
    // lte: numbers only
    ['lte', 50000, 49999, true],
    ['lte', 50000, 50000, true],
    ['lte', 50000, 50000.01, false],
    ['lte', 50000, -1, true],
    ['lte', 50000, '100', false],
    ['lte', '50000', 100, false],
    ['lte', 50000, null, false],
    ['lte', 50000, undefined, false],
    ['lte', 50000, true, false],
    ['lte', 50000, [100], false],
    ['lte', 50000, -Infinity, false],
    ['lte', Infinity, 1, false],
    ['lte', 50000, NaN, false],
    // gte
    ['gte', 10, 10, true],
    ['gte', 10, 11, true],
    ['gte', 10, 9.999, false],
    ['gte', 10, '11', false],
    ['gte', 10, Infinity, false],
    // in
    ['in', ['usd', 'eur'], 'usd', true],
    ['in', ['usd', 'eur'], 'gbp', false],
    ['in', ['usd', 'eur'], ['usd', 'eur'], true],
    ['in', ['usd', 'eur'], ['usd', 'gbp'], false],
    // An empty set is not a member of the grant: some upstreams read `[]` as "all".
    ['in', ['usd', 'eur'], [], false],
    ['in', [1, 2], 1, true],
    ['in', [1, 2], '1', false],
    ['in', ['1'], 1, false],
    ['in', 'usd', 'usd', false],
    ['in', ['usd'], undefined, false],
    ['in', ['usd'], [['usd']], false],
    ['in', [true], true, false],
    ['in', [], 'x', false],
  ];

  it.each(table)('%s granted %p, actual %p → %p', (op, granted, actual, expected) => {
    expect(matchConstraint(op, granted, actual)).toBe(expected);
  });

  it('fails closed on an unknown operator', () => {
    expect(matchConstraint('neq' as ConstraintOperator, 1, 2)).toBe(false);
  });
});

describe('jsonValuesEqual', () => {
  it('compares scalars and flat arrays strictly', () => {
    expect(jsonValuesEqual(1, 1)).toBe(true);
    expect(jsonValuesEqual(1, '1')).toBe(false);
    expect(jsonValuesEqual([1, 'a'], [1, 'a'])).toBe(true);
    expect(jsonValuesEqual([[1]], [[1]])).toBe(false);
    expect(jsonValuesEqual({}, {})).toBe(false);
    expect(jsonValuesEqual(null, null)).toBe(false);
  });
});

describe('parseDecimalString', () => {
  it.each([
    ['0', 0],
    ['42', 42],
    ['-7', -7],
    ['12.50', 12.5],
  ])('reads %p', (input, expected) => {
    expect(parseDecimalString(input)).toBe(expected);
  });

  it.each(['', ' 1', '1 ', '0x10', '1e3', 'Infinity', 'NaN', '01', '+1', '1.', '.5', '1,000', '-'])('refuses %p', (input) => {
    expect(parseDecimalString(input)).toBeUndefined();
  });

  it('refuses a decimal too large to be finite', () => {
    expect(parseDecimalString('9'.repeat(400))).toBeUndefined();
  });
});
