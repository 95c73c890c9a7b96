import { InvalidAuthorizationDetailsError } from '../errors/oauth-errors';
import { checkAuthorizationDetails, parseAuthorizationDetails } from './parse-authorization-details';

const payout = {
  type: 'connector',
  connector: 'payments',
  actions: ['payouts.create'],
  constraints: { destination: 'acct_1', amount_max: 50000, currency: 'usd' },
};

function descriptionOf(raw: unknown, options = {}): string {
  try {
    parseAuthorizationDetails(raw, options);
  } catch (error) {
    if (error instanceof InvalidAuthorizationDetailsError) {
      expect(error.status).toBe(400);
      expect(error.error).toBe('invalid_authorization_details');
      return error.description;
    }
    throw error;
  }
  throw new Error('expected invalid_authorization_details');
}

describe('parseAuthorizationDetails: accepted', () => {
  it('parses the JSON string form', () => {
    expect(parseAuthorizationDetails(JSON.stringify([payout]))).toEqual([payout]);
  });

  it('accepts an already-parsed value (Tasks API body)', () => {
    expect(parseAuthorizationDetails([payout])).toEqual([payout]);
  });

  it('returns fresh copies', () => {
    const input = [{ ...payout, actions: [...payout.actions], constraints: { ...payout.constraints } }];
    const [result] = parseAuthorizationDetails(input);
    expect(result).not.toBe(input[0]);
    expect(result.actions).not.toBe(input[0].actions);
    expect(result.constraints).not.toBe(input[0].constraints);
  });

  it('normalises member order and drops empty constraints and locations', () => {
    const [result] = parseAuthorizationDetails([{ constraints: {}, locations: [], actions: ['a'], connector: 'c', type: 'connector' }]);
    expect(result).toEqual({ type: 'connector', connector: 'c', actions: ['a'] });
    expect(Object.keys(result)).toEqual(['type', 'connector', 'actions']);
  });

  it('accepts every constraint value type', () => {
    const constraints = { s: 'x', n: -1.5, z: 0, b: false, list: ['a', 1], empty: [] };
    expect(parseAuthorizationDetails([{ ...payout, constraints }])[0].constraints).toEqual(constraints);
  });

  it('accepts locations as strings', () => {
    const locations = ['http://localhost:4001/connectors/payments'];
    expect(parseAuthorizationDetails([{ ...payout, locations }])[0].locations).toEqual(locations);
  });

  it('accepts connector identifiers at the pattern bounds', () => {
    expect(parseAuthorizationDetails([{ ...payout, connector: 'a' }])[0].connector).toBe('a');
    expect(parseAuthorizationDetails([{ ...payout, connector: `a${'b'.repeat(63)}` }])).toHaveLength(1);
    expect(parseAuthorizationDetails([{ ...payout, connector: '0git-hub_2.x' }])).toHaveLength(1);
  });

  it('accepts up to maxEntries entries', () => {
    expect(parseAuthorizationDetails(Array(10).fill(payout))).toHaveLength(10);
    expect(parseAuthorizationDetails(Array(3).fill(payout), { maxEntries: 3 })).toHaveLength(3);
  });
});

describe('parseAuthorizationDetails: refused', () => {
  it('names an unknown type', () => {
    expect(descriptionOf([{ ...payout, type: 'payment_initiation' }])).toBe('unknown authorization_details type "payment_initiation"');
  });

  it('sanitises a hostile type before echoing it', () => {
    expect(descriptionOf([{ ...payout, type: 'x"\r\ny' }])).toBe(`unknown authorization_details type "x'??y"`);
  });

  it.each([
    ['non-JSON', '[{"type":"connector",'],
    ['JSON that is not an array', '{"type":"connector"}'],
    ['an empty array', '[]'],
    ['null', 'null'],
    ['a non-object entry', '["connector"]'],
    ['a null entry', '[null]'],
    ['an array entry', '[[]]'],
  ])('refuses %s', (_label, raw) => {
    expect(descriptionOf(raw)).toMatch(/^authorization_details/);
  });

  it('refuses more than maxEntries entries', () => {
    expect(descriptionOf(Array(11).fill(payout))).toBe('authorization_details has more than 10 entries');
    expect(descriptionOf(Array(3).fill(payout), { maxEntries: 2 })).toBe('authorization_details has more than 2 entries');
  });

  it('refuses an oversized JSON string before parsing it', () => {
    expect(descriptionOf(`[${'1,'.repeat(9000)}1]`)).toBe('authorization_details is longer than 16384 characters');
  });

  it('refuses a missing type', () => {
    expect(descriptionOf([{ connector: 'payments', actions: ['a'] }])).toBe('authorization_details[0].type is required');
  });

  it.each([
    ['missing', undefined],
    ['empty', ''],
    ['uppercase', 'Payments'],
    ['with a slash', 'pay/ments'],
    ['path traversal', '..'],
    ['leading dash', '-payments'],
    ['too long', `a${'b'.repeat(64)}`],
    ['a number', 7],
  ])('refuses a connector that is %s', (_label, connector) => {
    expect(descriptionOf([{ ...payout, connector }])).toMatch(/^authorization_details\[0\]\.connector must be/);
  });

  it.each([
    ['missing', undefined],
    ['empty', []],
    ['not an array', 'payouts.create'],
    ['with an empty name', ['']],
    ['with a non-string', [1]],
    ['with whitespace', ['payouts create']],
    ['with duplicates', ['payouts.create', 'payouts.create']],
  ])('refuses actions %s', (_label, actions) => {
    expect(descriptionOf([{ ...payout, actions }])).toMatch(/^authorization_details\[0\]\.actions/);
  });

  it.each([
    ['a nested object', { limit: { max: 1 } }],
    ['null', { limit: null }],
    ['a nested array', { list: [['a']] }],
    ['an array holding a boolean', { list: [true] }],
    ['an array holding an object', { list: [{}] }],
  ])('refuses a constraint value that is %s', (_label, constraints) => {
    expect(descriptionOf([{ ...payout, constraints }])).toMatch(/^authorization_details\[0\]\.constraints\./);
  });

  it('refuses non-finite numbers given in parsed form (JSON cannot express them)', () => {
    for (const value of [NaN, Infinity, -Infinity]) {
      expect(descriptionOf([{ ...payout, constraints: { amount_max: value } }])).toMatch(/constraints\.amount_max/);
    }
  });

  it('refuses a JSON number that overflows to Infinity', () => {
    expect(descriptionOf('[{"type":"connector","connector":"p","actions":["a"],"constraints":{"amount_max":1e400}}]')).toMatch(/constraints\.amount_max/);
  });

  it('refuses constraints that are not an object', () => {
    expect(descriptionOf([{ ...payout, constraints: ['a'] }])).toBe('authorization_details[0].constraints must be a JSON object');
    expect(descriptionOf([{ ...payout, constraints: 'a' }])).toBe('authorization_details[0].constraints must be a JSON object');
  });

  it('refuses prototype-polluting constraint names', () => {
    const raw = '[{"type":"connector","connector":"p","actions":["a"],"constraints":{"__proto__":{"x":1}}}]';
    expect(descriptionOf(raw)).toBe('authorization_details[0].constraints.__proto__ is a forbidden member name');
    expect(({} as Record<string, unknown>).x).toBeUndefined();
    expect(descriptionOf([{ ...payout, constraints: { constructor: 'x' } }])).toBe(
      'authorization_details[0].constraints.constructor is a forbidden member name',
    );
    expect(descriptionOf([{ ...payout, constraints: { 'a b': 'x' } }])).toMatch(/invalid name "a b"/);
  });

  it('reads the JSON strictly: duplicate keys, lone surrogates, NUL and deep nesting name the member', () => {
    const entry = '{"type":"connector","connector":"p","actions":["a"],"constraints":';
    expect(descriptionOf(`[${entry}{"amount_max":1,"amount_max":9}}]`)).toBe(
      'authorization_details[0].constraints.amount_max appears more than once in one object',
    );
    expect(descriptionOf(`[${entry}{"d":"\\ud800"}}]`)).toBe('authorization_details[0].constraints.d contains a lone UTF-16 surrogate (not valid Unicode)');
    expect(descriptionOf(`[${entry}{"d":"a\\u0000"}}]`)).toBe('authorization_details[0].constraints.d contains a NUL character');
    expect(descriptionOf('['.repeat(3000) + ']'.repeat(3000))).toMatch(/nests deeper than 32 levels/);
    expect(descriptionOf([{ ...payout, constraints: { d: 'x\ud800' } }])).toMatch(/lone UTF-16 surrogate/);
  });

  it('refuses unknown members, including other RFC 9396 common members', () => {
    expect(descriptionOf([{ ...payout, privileges: ['admin'] }])).toBe('authorization_details[0]."privileges" is not supported');
    expect(descriptionOf([{ ...payout, datatypes: ['x'] }])).toMatch(/"datatypes" is not supported/);
    expect(descriptionOf([{ ...payout, identifier: 'x' }])).toMatch(/"identifier" is not supported/);
  });

  it('refuses locations that are not strings', () => {
    expect(descriptionOf([{ ...payout, locations: 'https://x' }])).toBe('authorization_details[0].locations must be an array of strings');
    expect(descriptionOf([{ ...payout, locations: [1] }])).toMatch(/locations\[0\]/);
    expect(descriptionOf([{ ...payout, locations: [''] }])).toMatch(/locations\[0\]/);
  });

  it('reports the index of the failing entry', () => {
    expect(descriptionOf([payout, { ...payout, actions: [] }])).toMatch(/^authorization_details\[1\]\.actions/);
  });

  it('never echoes constraint values', () => {
    const description = descriptionOf([{ ...payout, constraints: { token: { secret: 'sk_live_abc' } } }]);
    expect(description).not.toContain('sk_live_abc');
  });

  it('refuses class instances and other non-plain objects', () => {
    expect(descriptionOf([new Date()])).toBe('authorization_details[0] must be a JSON object');
    expect(descriptionOf([{ ...payout, constraints: new Map() }])).toMatch(/constraints must be a JSON object/);
  });
});

describe('checkAuthorizationDetails', () => {
  const pathsOf = (raw: unknown, maxProblems = 50) => checkAuthorizationDetails(raw, { maxProblems }).problems.map((problem) => problem.path);

  it('reports every member of every entry, in order, with the first problem as parseAuthorizationDetails describes it', () => {
    const raw = [
      { ...payout, actions: [], constraints: { ok: 1, 'bad name': 1, big: 'x'.repeat(2000) } },
      { type: 'other' },
      { ...payout, connector: '!', locations: [1, 'https://x', ''], extra: 1 },
    ];
    expect(pathsOf(raw)).toEqual([
      'authorization_details[0].actions',
      'authorization_details[0].constraints.bad name',
      'authorization_details[0].constraints.big',
      'authorization_details[1].type',
      'authorization_details[2].extra',
      'authorization_details[2].connector',
      'authorization_details[2].locations[0]',
      'authorization_details[2].locations[2]',
    ]);
    expect(checkAuthorizationDetails(raw, { maxProblems: 50 }).problems[0].description).toBe(descriptionOf(raw));
  });

  it('reports every JSON problem of the string form, and stops at maxProblems', () => {
    expect(pathsOf('[{"type":"connector","type":"connector","constraints":{"a":1e400,"b":"\\ud800"}}]')).toEqual([
      'authorization_details[0].type',
      'authorization_details[0].constraints.a',
      'authorization_details[0].constraints.b',
    ]);
    expect(pathsOf([{ ...payout, actions: Array(20).fill('') }], 5)).toHaveLength(5);
  });

  it('returns the entries when there is no problem', () => {
    expect(checkAuthorizationDetails([payout])).toEqual({ details: parseAuthorizationDetails([payout]), problems: [] });
  });
});
