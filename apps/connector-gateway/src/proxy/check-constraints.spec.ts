import type { ConnectorOperation } from '@writ/database';
import { checkConstraints, hasConstraints, MAX_QUERY_PARAMETERS, needsBody } from './check-constraints';

const payout: ConnectorOperation = {
  name: 'payouts.create',
  method: 'POST',
  path: '/v1/payouts',
  risk: 'write',
  constraints: {
    destination: { in: 'body', field: 'destination', op: 'eq' },
    amount_max: { in: 'body', field: 'amount', op: 'lte' },
    currency: { in: 'body', field: 'meta.currency', op: 'eq' },
  },
};
const issues: ConnectorOperation = {
  name: 'issues.list',
  method: 'GET',
  path: '/repos/{owner}/{repo}/issues',
  risk: 'read',
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
      ['destination', 'acct_1', true],
      ['amount_max', 42000, true],
      ['currency', 'usd', true],
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
    const ok = checkConstraints(
      issues,
      { repo: 'writ', per_page: 50, state: ['open', 'closed'] },
      {
        pathParams: { owner: 'acme', repo: 'writ' },
        query: 'per_page=50&state=open',
        body: undefined,
      },
    );
    expect(ok.failure).toBeUndefined();
    expect(ok.checked.find((c) => c.name === 'per_page')?.actual).toBe(50);
  });

  it.each([
    ['another repository', { owner: 'acme', repo: 'other' }, 'per_page=1&state=open', 'constraint:repo'],
    ['a larger page', { owner: 'acme', repo: 'writ' }, 'per_page=51&state=open', 'constraint:per_page'],
    ['a number that is not a number', { owner: 'acme', repo: 'writ' }, 'per_page=0x10&state=open', 'constraint:per_page'],
    ['a repeated query parameter', { owner: 'acme', repo: 'writ' }, 'per_page=1&per_page=500&state=open', 'constraint:per_page'],
    ['a case variant (ASP.NET)', { owner: 'acme', repo: 'writ' }, 'PER_PAGE=500&per_page=1&state=open', 'constraint:per_page'],
    ['a case variant under Unicode folding', { owner: 'acme', repo: 'writ' }, 'per_page=1&state=open&%C5%BFtate=x', 'constraint:state'],
    ['a leading-space variant (PHP)', { owner: 'acme', repo: 'writ' }, 'per_page=1&%20per_page=500&state=open', 'constraint:per_page'],
    ['a plus-space variant (PHP)', { owner: 'acme', repo: 'writ' }, 'per_page=1&+per_page=500&state=open', 'constraint:per_page'],
    ['a bracket variant (PHP, Rails)', { owner: 'acme', repo: 'writ' }, 'per_page=1&per_page[]=500&state=open', 'constraint:per_page'],
    ['a dotted variant (PHP)', { owner: 'acme', repo: 'writ' }, 'per_page=1&per.page=500&state=open', 'constraint:per_page'],
    ['only a case variant, the constrained name absent', { owner: 'acme', repo: 'writ' }, 'PER_PAGE=1&state=open', 'constraint:per_page'],
    ['a value outside the set', { owner: 'acme', repo: 'writ' }, 'per_page=1&state=all', 'constraint:state'],
  ])('refuses %s', (_name, pathParams, query, rule) => {
    const result = checkConstraints(issues, { repo: 'writ', per_page: 50, state: ['open', 'closed'] }, { pathParams, query, body: undefined });
    expect(result.failure?.rule).toBe(rule);
  });

  it('names the ambiguity for the audit event, and passes ordinary queries with other parameters', () => {
    const grantIssues = { repo: 'writ', per_page: 50, state: ['open', 'closed'] };
    const run = (query: string) => checkConstraints(issues, grantIssues, { pathParams: { owner: 'acme', repo: 'writ' }, query, body: undefined });
    expect(run('per_page=1&Per_Page=2&state=open').failure?.reason).toBe('ambiguous_parameter');
    expect(run('per_page=10&state=open&page=2&sort=created&per_pages=9&q=a%20b').failure).toBeUndefined();
  });

  it('refuses a query of more than MAX_QUERY_PARAMETERS parts when a query parameter is checked (upstreams drop those past their limit)', () => {
    const grantIssues = { repo: 'writ', per_page: 50, state: ['open', 'closed'] };
    const run = (query: string) => checkConstraints(issues, grantIssues, { pathParams: { owner: 'acme', repo: 'writ' }, query, body: undefined });
    const filler = (parts: number) => 'x&'.repeat(parts);
    expect(run(`${filler(MAX_QUERY_PARAMETERS - 1)}per_page=1&state=open`).failure).toMatchObject({
      rule: 'constraint:per_page',
      reason: 'too_many_parameters',
    });
    expect(run(`${filler(MAX_QUERY_PARAMETERS - 2)}per_page=1&state=open`).failure).toBeUndefined();
    // Without a checked query parameter, the query is not counted.
    expect(
      checkConstraints(issues, { repo: 'writ' }, { pathParams: { owner: 'acme', repo: 'writ' }, query: filler(5000), body: undefined }).failure,
    ).toBeUndefined();
  });

  describe('a dotted body field also sent under its dotted name (Laravel Arr::get, lodash _.get read the literal key first)', () => {
    const run = (requestBody: unknown) => checkConstraints(payout, grant, { pathParams: {}, query: '', body: requestBody });
    it.each([
      ['at the top level', body({ 'meta.currency': 'eur' })],
      ['in another case', body({ 'META.Currency': 'eur' })],
      ['without the nested field', { destination: 'acct_1', amount: 42000, 'meta.currency': 'usd' }],
    ])('refuses it %s, as ambiguous', (_name, requestBody) => {
      const result = run(requestBody);
      expect(result.failure).toMatchObject({ rule: 'constraint:currency', reason: 'ambiguous_parameter' });
      expect(result.failure?.description).toMatch(/^body field meta\.currency is also sent as the member "(meta\.currency|META\.Currency)"/);
    });

    it('refuses it one level down, for a deeper field', () => {
      const deep: ConnectorOperation = { ...payout, constraints: { currency: { in: 'body', field: 'a.b.c', op: 'eq' } } };
      const result = checkConstraints(deep, { currency: 'usd' }, { pathParams: {}, query: '', body: { a: { b: { c: 'usd' }, 'b.c': 'eur' } } });
      expect(result.failure).toMatchObject({ rule: 'constraint:currency', reason: 'ambiguous_parameter' });
      expect(result.failure?.description).toContain('is also sent as the member "b.c" of a');
    });

    it('passes dotted keys that are not a constrained path', () => {
      expect(run(body({ 'meta.other': 'x', 'x.currency': 'eur' })).failure).toBeUndefined();
    });
  });

  describe('a constrained name in the other location (Rails, Laravel, Flask merge query and body)', () => {
    const run = (query: string, requestBody: unknown = body()) => checkConstraints(payout, grant, { pathParams: {}, query, body: requestBody });
    it.each([
      ['the body-bound name as a query parameter', 'amount=99999999', 'constraint:amount_max'],
      ['it in another case', 'AMOUNT=99999999', 'constraint:amount_max'],
      ['it with a [] suffix', 'amount[]=99999999', 'constraint:amount_max'],
      ['the first part of a dotted field', 'meta[currency]=eur', 'constraint:currency'],
      ['a destination in the query', 'destination=acct_evil', 'constraint:destination'],
    ])('refuses %s', (_name, query, rule) => {
      const result = run(query);
      expect(result.failure).toMatchObject({ rule, reason: 'field_in_two_places' });
    });

    it('refuses a query-bound name sent as a top-level body member, in any case', () => {
      const grantIssues = { repo: 'writ', per_page: 50 };
      const request = (bodyNames: string[]) => ({ pathParams: { owner: 'acme', repo: 'writ' }, query: 'per_page=10', body: undefined, bodyNames });
      expect(checkConstraints(issues, grantIssues, request(['per_page'])).failure).toMatchObject({
        rule: 'constraint:per_page',
        reason: 'field_in_two_places',
      });
      expect(checkConstraints(issues, grantIssues, request(['Per_Page'])).failure?.rule).toBe('constraint:per_page');
      expect(checkConstraints(issues, grantIssues, request(['title', 'labels'])).failure).toBeUndefined();
    });

    it('passes other query parameters beside a body', () => {
      expect(run('expand=balance&idempotency=1&amounts=2').failure).toBeUndefined();
    });
  });

  describe('a path-bound name also in the query or the body (Rails, Sinatra and Spring merge path parameters with the others)', () => {
    const grantIssues = { repo: 'writ' };
    const request = (query: string, bodyNames: string[] = []) => ({ pathParams: { owner: 'acme', repo: 'writ' }, query, body: undefined, bodyNames });
    it.each([
      ['as a query parameter', 'repo=evil', []],
      ['as a query parameter in another case, with []', 'REPO%5B%5D=evil', []],
      ['as a top-level body member', '', ['repo']],
      ['as a body member with a leading space', '', [' Repo']],
    ])('refuses it %s', (_name, query, bodyNames) => {
      expect(checkConstraints(issues, grantIssues, request(query, bodyNames)).failure).toMatchObject({
        rule: 'constraint:repo',
        reason: 'field_in_two_places',
        description: expect.stringMatching(/^path field repo is also sent in the (query|body)/),
      });
    });

    it('passes other names, and an unconstrained path parameter sent again', () => {
      expect(checkConstraints(issues, grantIssues, request('repos=x&owner=evil', ['title', 'owner'])).failure).toBeUndefined();
    });

    it('refuses a path-bound name that another parameter of the template spells differently ({Repo} and {repo})', () => {
      const twice: ConnectorOperation = { ...issues, path: '/repos/{Repo}/x/{repo}', constraints: { repo: { in: 'path', field: 'repo', op: 'eq' } } };
      const result = checkConstraints(twice, grantIssues, { pathParams: { Repo: 'evil', repo: 'writ' }, query: '', body: undefined });
      expect(result.failure).toMatchObject({ rule: 'constraint:repo', reason: 'field_in_two_places' });
    });

    it('refuses a query- or body-bound name that is also a parameter of the path template', () => {
      const shadowed: ConnectorOperation = {
        name: 'shadowed',
        method: 'POST',
        path: '/v1/{account}/transfers',
        risk: 'write',
        constraints: { account: { in: 'body', field: 'account', op: 'eq' }, owner: { in: 'query', field: 'Owner', op: 'eq' } },
      };
      const run = (granted: Record<string, unknown>, pathParams: Record<string, string>) =>
        checkConstraints(shadowed, granted, { pathParams, query: 'Owner=me', body: { account: 'acct_1' }, bodyNames: ['account'] });
      expect(run({ account: 'acct_1' }, { account: 'acct_evil' }).failure).toMatchObject({ rule: 'constraint:account', reason: 'field_in_two_places' });
      expect(run({ owner: 'me' }, { owner: 'x' }).failure).toMatchObject({ rule: 'constraint:owner', reason: 'field_in_two_places' });
    });
  });

  it('refuses a granted constraint the operation does not bind', () => {
    expect(checkConstraints(issues, { label: 'x' }, { pathParams: {}, query: '', body: undefined }).failure?.rule).toBe('constraint:label');
  });

  const withText = (text: string, operation = payout, granted: Record<string, unknown> = grant) =>
    checkConstraints(operation, granted, { pathParams: {}, query: '', body: JSON.parse(text), bodyText: text });

  it.each([
    ['more precision than a double', '30000.000000000000001'],
    ['exponent notation', '3e4'],
    ['an exponent past the double range', '1e400'],
    ['a huge exponent', '1e999999999'],
    ['an integer past 2^53', '9007199254740993'],
    ['negative zero', '-0'],
    ['a tiny value that rounds', '0.1000000000000000000001'],
  ])('refuses a body number with %s as invalid, naming the field', (_name, amount) => {
    const result = withText(`{"destination":"acct_1","meta":{"currency":"usd"},"amount":${amount}}`);
    expect(result.invalid).toEqual({ field: 'body.amount', description: expect.stringMatching(/^body field amount /) });
  });

  it('accepts decimals that denote exactly the value compared, whitespace and nesting around them', () => {
    for (const amount of ['30000', '29999.5', '0.1', '1.50', '-0.25', '9007199254740991']) {
      const result = withText(`{ "meta" : {"currency":"usd", "x":[1,{"amount":99e99}]}, "amount" : ${amount} , "destination":"acct_1"}`, payout, {
        ...grant,
        amount_max: 9007199254740991,
      });
      expect(result.invalid).toBeUndefined();
      expect(result.failure).toBeUndefined();
    }
  });

  it('reads nested and array numbers as written', () => {
    const nested: ConnectorOperation = {
      ...payout,
      constraints: { total: { in: 'body', field: 'a.b', op: 'lte' }, ids: { in: 'body', field: 'ids', op: 'in' } },
    };
    expect(withText('{"a":{"b":1e3},"ids":[1]}', nested, { total: 5000, ids: [1, 2] }).invalid?.field).toBe('body.a.b');
    expect(withText('{"a":{"b":10},"ids":[1, 2.0000000000000001]}', nested, { total: 5000, ids: [1, 2] }).invalid?.field).toBe('body.ids');
    expect(withText('{"a":{"b":10},"ids":[1, 2]}', nested, { total: 5000, ids: [1, 2] }).invalid).toBeUndefined();
  });

  it('refuses inexact path and query numbers as invalid', () => {
    for (const query of ['per_page=30.000000000000000001&state=open', 'per_page=3e1&state=open', 'per_page=-0&state=open', 'per_page=010&state=open']) {
      const result = checkConstraints(
        issues,
        { repo: 'writ', per_page: 50, state: ['open'] },
        { pathParams: { owner: 'a', repo: 'writ' }, query, body: undefined },
      );
      expect(result.invalid?.field).toBe('query.per_page');
    }
  });

  it('enforces catalogue bounds whatever the grant says, even on constraints the grant does not name', () => {
    const bounded: ConnectorOperation = {
      ...payout,
      constraints: { ...payout.constraints, amount_max: { in: 'body', field: 'amount', op: 'lte', min: 1, max: 100000 } },
    };
    expect(withText('{"destination":"acct_1","meta":{"currency":"usd"},"amount":-1}', bounded).failure?.rule).toBe('constraint:amount_max');
    expect(withText('{"destination":"acct_1","meta":{"currency":"usd"},"amount":0}', bounded).failure?.rule).toBe('constraint:amount_max');
    expect(withText('{"destination":"acct_1","meta":{"currency":"usd"},"amount":500}', bounded).failure).toBeUndefined();
    expect(withText('{"destination":"acct_1","meta":{"currency":"usd"},"amount":200000}', bounded, { ...grant, amount_max: 10_000_000 }).failure?.rule).toBe(
      'constraint:amount_max',
    );
    // The grant names only the destination: the bound on amount still holds.
    expect(withText('{"destination":"acct_1","amount":-5}', bounded, { destination: 'acct_1' }).failure?.rule).toBe('constraint:amount_max');
    expect(withText('{"destination":"acct_1","amount":"-5"}', bounded, { destination: 'acct_1' }).failure?.rule).toBe('constraint:amount_max');
    expect(withText('{"destination":"acct_1"}', bounded, { destination: 'acct_1' }).failure).toBeUndefined();
    expect(needsBody(bounded, undefined)).toBe(true);
  });

  it('knows when a body must be parsed', () => {
    expect(needsBody(payout, grant)).toBe(true);
    expect(needsBody(issues, { repo: 'x' })).toBe(false);
    expect(needsBody(payout, undefined)).toBe(false);
  });
});

describe('hasConstraints', () => {
  it('is true with a granted constraint or a catalogue bound, false with neither', () => {
    expect(hasConstraints(issues, { repo: 'writ' })).toBe(true);
    expect(hasConstraints(issues, {})).toBe(false);
    expect(hasConstraints(issues, undefined)).toBe(false);
    const bounded: ConnectorOperation = { ...payout, constraints: { amount: { in: 'body', field: 'amount', op: 'lte', max: 10 } } };
    expect(hasConstraints(bounded, undefined)).toBe(true);
  });
});

describe('header constraints', () => {
  const connect: ConnectorOperation = {
    name: 'payouts.create',
    method: 'POST',
    path: '/v1/payouts',
    risk: 'write',
    constraints: {
      account: { in: 'header', field: 'Stripe-Account', op: 'eq' },
      orgs: { in: 'header', field: 'OpenAI-Organization', op: 'in' },
    },
  };
  const check = (granted: Record<string, unknown> | undefined, rawHeaders: string[]) =>
    checkConstraints(connect, granted, { pathParams: {}, query: '', body: undefined, rawHeaders });

  it('passes the granted value sent once, in any case, and gives it back to be forwarded as checked', () => {
    const result = check({ account: 'acct_1' }, ['stripe-account', 'acct_1', 'Authorization', 'Bearer x']);
    expect(result.failure).toBeUndefined();
    expect(result.checked).toEqual([{ name: 'account', in: 'header', op: 'eq', granted: 'acct_1', actual: 'acct_1', ok: true }]);
    expect(result.headers).toEqual({ 'Stripe-Account': 'acct_1' });
    expect(check({ orgs: ['org_a', 'org_b'] }, ['OPENAI-ORGANIZATION', 'org_b']).headers).toEqual({ 'OpenAI-Organization': 'org_b' });
  });

  it.each([
    ['another account', ['Stripe-Account', 'acct_other'], undefined],
    ['no header at all', [], undefined],
    ['the header twice', ['Stripe-Account', 'acct_1', 'Stripe-Account', 'acct_other'], 'ambiguous_header'],
    ['the header twice in two cases', ['Stripe-Account', 'acct_1', 'stripe-account', 'acct_other'], 'ambiguous_header'],
    ['the header also spelled with _', ['Stripe-Account', 'acct_1', 'Stripe_Account', 'acct_other'], 'ambiguous_header'],
    ['a comma-joined list', ['Stripe-Account', 'acct_1, acct_other'], 'ambiguous_header'],
    ['a Connection header naming it', ['Stripe-Account', 'acct_1', 'Connection', 'keep-alive, Stripe-Account'], 'ambiguous_header'],
    ['a Connection header naming its _ spelling', ['Stripe-Account', 'acct_1', 'connection', 'stripe_account'], 'ambiguous_header'],
  ])('refuses %s, naming the constraint', (_label, rawHeaders, reason) => {
    const result = check({ account: 'acct_1' }, rawHeaders);
    expect(result.failure).toEqual({ rule: 'constraint:account', description: expect.stringContaining('Stripe-Account'), ...(reason ? { reason } : {}) });
    expect(result.headers).toBeUndefined();
  });

  it('refuses a value outside an `in` set', () => {
    expect(check({ orgs: ['org_a'] }, ['OpenAI-Organization', 'org_evil']).failure?.rule).toBe('constraint:orgs');
  });

  it('refuses a header the operation binds but the grant does not give a value: the call runs under the credential itself', () => {
    expect(check({}, ['Stripe-Account', 'acct_other']).failure).toMatchObject({ rule: 'constraint:account', reason: 'header_not_granted' });
    expect(check(undefined, ['stripe_account', 'acct_other']).failure).toMatchObject({ rule: 'constraint:account', reason: 'header_not_granted' });
    expect(check({}, ['Accept', 'application/json']).failure).toBeUndefined();
  });

  it('never reads a header from the path, the query or the body, and refuses an unknown location', () => {
    const result = checkConstraints(connect, { account: 'acct_1' }, { pathParams: {}, query: 'Stripe-Account=acct_1', body: { 'Stripe-Account': 'acct_1' } });
    expect(result.failure?.rule).toBe('constraint:account');
    const odd = { ...connect, constraints: { account: { in: 'cookie' as never, field: 'a', op: 'eq' as const } } };
    expect(checkConstraints(odd, { account: 'acct_1' }, { pathParams: {}, query: '', body: { a: 'acct_1' } }).failure?.rule).toBe('constraint:account');
  });
});
