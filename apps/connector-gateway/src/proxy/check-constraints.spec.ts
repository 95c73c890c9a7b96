import type { ConnectorOperation } from '@writ/database';
import { checkConstraints, needsBody } from './check-constraints';

const payout: ConnectorOperation = {
  name: 'payouts.create', method: 'POST', path: '/v1/payouts', risk: 'write',
  constraints: {
    destination: { in: 'body', field: 'destination', op: 'eq' },
    amount_max: { in: 'body', field: 'amount', op: 'lte' },
    currency: { in: 'body', field: 'meta.currency', op: 'eq' },
  },
};
const issues: ConnectorOperation = {
  name: 'issues.list', method: 'GET', path: '/repos/{owner}/{repo}/issues', risk: 'read',
  constraints: {
    repo: { in: 'path', field: 'repo', op: 'eq' },
    per_page: { in: 'query', field: 'per_page', op: 'lte' },
    state: { in: 'query', field: 'state', op: 'in' },
  },
};
const grant = { destination: 'acct_1', amount_max: 50000, currency: 'usd' };
const body = (over: Record<string, unknown> = {}) => ({ destination: 'acct_1', amount: 42000, meta: { currency: 'usd' }, ...over });

describe('checkConstraints', () => {
  it('passes a request inside the grant and reports what it checked', () => {
    const result = checkConstraints(payout, grant, { pathParams: {}, query: '', body: body() });
    expect(result.failure).toBeUndefined();
    expect(result.checked.map((c) => [c.name, c.actual, c.ok])).toEqual([
      ['destination', 'acct_1', true], ['amount_max', 42000, true], ['currency', 'usd', true],
    ]);
  });

  it.each([
    ['another destination', body({ destination: 'acct_2' }), 'constraint:destination'],
    ['a higher amount', body({ amount: 50001 }), 'constraint:amount_max'],
    ['an amount given as a string', body({ amount: '100' }), 'constraint:amount_max'],
    ['a missing amount', { destination: 'acct_1', meta: { currency: 'usd' } }, 'constraint:amount_max'],
    ['a nested field in the wrong place', body({ meta: 'usd' }), 'constraint:currency'],
    ['an inherited property', { destination: 'acct_1', amount: 1, meta: Object.create({ currency: 'usd' }) }, 'constraint:currency'],
    ['no body at all', undefined, 'constraint:destination'],
  ])('refuses %s', (_name, requestBody, rule) => {
    expect(checkConstraints(payout, grant, { pathParams: {}, query: '', body: requestBody }).failure?.rule).toBe(rule);
  });

  it('reads path and query text as the granted type', () => {
    const ok = checkConstraints(issues, { repo: 'writ', per_page: 50, state: ['open', 'closed'] }, {
      pathParams: { owner: 'acme', repo: 'writ' }, query: 'per_page=50&state=open', body: undefined,
    });
    expect(ok.failure).toBeUndefined();
    expect(ok.checked.find((c) => c.name === 'per_page')?.actual).toBe(50);
  });

  it.each([
    ['another repository', { owner: 'acme', repo: 'other' }, 'per_page=1&state=open', 'constraint:repo'],
    ['a larger page', { owner: 'acme', repo: 'writ' }, 'per_page=51&state=open', 'constraint:per_page'],
    ['a non-decimal number', { owner: 'acme', repo: 'writ' }, 'per_page=1e1&state=open', 'constraint:per_page'],
    ['a repeated query parameter', { owner: 'acme', repo: 'writ' }, 'per_page=1&per_page=500&state=open', 'constraint:per_page'],
    ['a value outside the set', { owner: 'acme', repo: 'writ' }, 'per_page=1&state=all', 'constraint:state'],
  ])('refuses %s', (_name, pathParams, query, rule) => {
    const result = checkConstraints(issues, { repo: 'writ', per_page: 50, state: ['open', 'closed'] }, { pathParams, query, body: undefined });
    expect(result.failure?.rule).toBe(rule);
  });

  it('refuses a granted constraint the operation does not bind', () => {
    expect(checkConstraints(issues, { label: 'x' }, { pathParams: {}, query: '', body: undefined }).failure?.rule).toBe('constraint:label');
  });

  it('knows when a body must be parsed', () => {
    expect(needsBody(payout, grant)).toBe(true);
    expect(needsBody(issues, { repo: 'x' })).toBe(false);
    expect(needsBody(payout, undefined)).toBe(false);
  });
});
