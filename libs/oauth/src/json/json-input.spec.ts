import { findJsonInputProblem, JsonInputError, parseJsonInput, replaceLoneSurrogates } from './json-input';

function problemOf(text: string, options = {}): JsonInputError {
  try {
    parseJsonInput(text, options);
  } catch (error) {
    if (error instanceof JsonInputError) return error;
    throw error;
  }
  throw new Error('expected a JsonInputError');
}

describe('parseJsonInput', () => {
  it.each([
    '{}',
    '[]',
    '0',
    '-0',
    '1.5e3',
    '-12.25E-2',
    'true',
    'false',
    'null',
    '"x"',
    ' { "a" : [ 1 , 2 , { "b" : null } ] , "c" : "d" } ',
    '"\\u00e9\\n\\t\\"\\\\\\/\\b\\f\\r"',
    '"\ud83d\ude00"',
    '"\\ud83d\\ude00"',
    '{"a":{"b":{"c":[[],{}]}}}',
    '[9007199254740992, 1e308, 5e-324, 600.0, 6e2, 0.1]',
  ])('parses %s exactly as JSON.parse does', (text) => {
    expect(parseJsonInput(text)).toEqual(JSON.parse(text));
  });

  it.each([
    '',
    '{',
    '[1,]',
    '{"a":1,}',
    "{'a':1}",
    '{"a" 1}',
    '01',
    '1.',
    '.5',
    '+1',
    '-',
    'tru',
    'nul',
    '"\u0001"',
    '"\\x41"',
    '"\\u12"',
    '[1 2]',
    '{"a":1}x',
    'NaN',
    'Infinity',
    '"abc',
  ])('refuses invalid JSON %p like JSON.parse', (text) => {
    expect(() => JSON.parse(text)).toThrow();
    expect(problemOf(text).reason).toBe('syntax');
  });

  it('refuses a duplicate key, naming it, also when one spelling is escaped', () => {
    expect(problemOf('{"a":{"b":1,"\\u0062":2}}')).toMatchObject({ path: 'a.b', reason: 'duplicate_key' });
  });

  it.each(['__proto__', 'constructor', 'prototype'])('refuses the key %s anywhere, naming its path', (key) => {
    const error = problemOf(`{"allowed":[{"constraints":{"${key}":{"amount_max":1}}}]}`);
    expect(error).toMatchObject({ path: `allowed[0].constraints.${key}`, reason: 'forbidden_key' });
    expect(error.message).toBe(`allowed[0].constraints.${key} is a forbidden member name`);
  });

  it('refuses lone surrogates in values and keys, escaped or raw', () => {
    expect(problemOf('{"purpose":"a\\ud800"}')).toMatchObject({ path: 'purpose', reason: 'lone_surrogate' });
    expect(problemOf('{"p":"\\udc00\\ud800"}')).toMatchObject({ path: 'p', reason: 'lone_surrogate' });
    expect(problemOf('{"p":["\ud800"]}')).toMatchObject({ path: 'p[0]', reason: 'lone_surrogate' });
    expect(problemOf('{"\\ud800":1}').reason).toBe('lone_surrogate');
  });

  it('refuses NUL only when asked', () => {
    expect(parseJsonInput('{"a":"x\\u0000"}')).toEqual({ a: 'x\u0000' });
    expect(problemOf('{"a":"x\\u0000"}', { forbidNul: true })).toMatchObject({ path: 'a', reason: 'nul_character' });
  });

  it('refuses numbers that overflow', () => {
    expect(problemOf('{"ttl_seconds":1e400}')).toMatchObject({ path: 'ttl_seconds', reason: 'number_out_of_range' });
    expect(problemOf('[-1e999]')).toMatchObject({ path: '[0]', reason: 'number_out_of_range' });
  });

  it.each([
    ['{"amount_max":9007199254740993}', 'amount_max', '9007199254740992'],
    ['{"a":[1,-9007199254740993]}', 'a[1]', '-9007199254740992'],
    ['{"ttl_seconds":1e-400}', 'ttl_seconds', '0'],
    ['{"x":{"y":0.30000000000000001}}', 'x.y', '0.3'],
  ])('refuses %s: the number it reads as is another one', (text, path, readAs) => {
    const problem = problemOf(text);
    expect(problem).toMatchObject({ path, reason: 'inexact_number' });
    expect(problem?.problem).toBe(`is a number that cannot be kept exactly (it would read as ${readAs})`);
  });

  it('limits nesting without recursing deeper than the limit', () => {
    expect(parseJsonInput('[[[1]]]', { maxDepth: 3 })).toEqual([[[1]]]);
    expect(problemOf('[[[[1]]]]', { maxDepth: 3 }).reason).toBe('too_deep');
    const hostile = '['.repeat(100_000) + ']'.repeat(100_000);
    expect(problemOf(hostile)).toMatchObject({ reason: 'too_deep' });
    expect(problemOf('{"a":' + '{"a":'.repeat(3000) + '1' + '}'.repeat(3001)).reason).toBe('too_deep');
  });

  it('prefixes paths with the root and renders hostile keys printable', () => {
    expect(problemOf('[{"\\r\\n":1,"\\r\\n":2}]', { root: 'authorization_details' }).path).toBe('authorization_details[0].??');
  });

  it('creates plain objects whose keys are own data properties', () => {
    const value = parseJsonInput('{"toString":1,"hasOwnProperty":2}') as Record<string, unknown>;
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(Object.keys(value)).toEqual(['toString', 'hasOwnProperty']);
  });
});

describe('findJsonInputProblem', () => {
  it('finds what JSON.parse let through', () => {
    expect(findJsonInputProblem(JSON.parse('{"a":[{"__proto__":1}]}'))).toMatchObject({ path: 'a[0].__proto__', reason: 'forbidden_key' });
    expect(findJsonInputProblem(JSON.parse('{"a":"\\ud800"}'))).toMatchObject({ path: 'a', reason: 'lone_surrogate' });
    expect(findJsonInputProblem(JSON.parse('{"a":1e400}'))).toMatchObject({ path: 'a', reason: 'number_out_of_range' });
    expect(findJsonInputProblem(JSON.parse('[[[[1]]]]'), { maxDepth: 3 })).toMatchObject({ reason: 'too_deep' });
    expect(findJsonInputProblem({ a: [1, 'b', { c: null }] })).toBeUndefined();
  });
});

describe('replaceLoneSurrogates', () => {
  it('replaces lone surrogates and keeps pairs', () => {
    expect(replaceLoneSurrogates('a\ud800b\ud83d\ude00\udc00')).toBe('a\ufffdb\ud83d\ude00\ufffd');
    expect(replaceLoneSurrogates('plain')).toBe('plain');
  });
});

describe('parseJsonInput with maxProblems', () => {
  const problemsOf = (text: string, maxProblems: number, maxDepth?: number) =>
    problemOf(text, { maxProblems, forbidNul: true, maxDepth }).problems.map((p) => [p.path, p.reason]);

  it('reads on past member problems and reports them all, in document order', () => {
    expect(problemsOf('{"purpose":"a\\ud800","a":1,"a":2,"__proto__":{"x":1e400},"n":"\\u0000","limit":9007199254740993}', 50)).toEqual([
      ['purpose', 'lone_surrogate'],
      ['a', 'duplicate_key'],
      ['__proto__', 'forbidden_key'],
      ['__proto__.x', 'number_out_of_range'],
      ['n', 'nul_character'],
      ['limit', 'inexact_number'],
    ]);
  });

  it('stops at maxProblems', () => {
    expect(problemsOf(`[${Array(10).fill('1e400').join(',')}]`, 3)).toHaveLength(3);
  });

  it('reports a syntax error alone, and deep nesting after the problems before it', () => {
    expect(problemsOf('{"a":"\\ud800",', 50)).toEqual([['', 'syntax']]);
    expect(problemsOf('{"a":"\\ud800","b":[[[[1]]]]}', 50, 3)).toEqual([
      ['a', 'lone_surrogate'],
      ['b[0][0]', 'too_deep'],
    ]);
  });

  it('reports one problem by default, as before', () => {
    expect(problemOf('{"a":1e400,"b":1e400}').problems.map((p) => p.path)).toEqual(['a']);
  });
});
