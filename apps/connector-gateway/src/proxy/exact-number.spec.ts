import { inexactNumberProblem, rawArrayElements, rawValueAt } from './exact-number';

describe('inexactNumberProblem', () => {
  it.each(['0', '1', '-1', '30000', '0.5', '1.50', '100.0', '0.1', '-29999.99', '9007199254740991', '-9007199254740991', '0.000001', '0.0000001'])(
    'accepts %s',
    (text) => expect(inexactNumberProblem(text)).toBeUndefined(),
  );

  it.each([
    ['30000.000000000000001', /precision/],
    ['9007199254740993', /from -9007199254740991/],
    ['9007199254740992', /from -9007199254740991/],
    ['3e4', /plain decimal/],
    ['1E2', /plain decimal/],
    ['1e400', /plain decimal/],
    ['-0', /negative zero/],
    ['-0.0', /negative zero/],
    ['+1', /plain decimal/],
    ['01', /plain decimal/],
    ['1.', /plain decimal/],
    ['.5', /plain decimal/],
    ['9'.repeat(400), /from/],
    ['0.30000000000000001', /precision/],
  ])('refuses %s', (text, message) => expect(inexactNumberProblem(text)).toMatch(message));
});

describe('rawValueAt', () => {
  const text = ' {"a" : {"x":"}\\"{", "b":[1, {"c":2}], "c" : 1.50 }, "d\\u0061": -0 , "n": null}';
  it('finds the source text of a member by path, skipping strings, arrays and objects', () => {
    expect(rawValueAt(text, ['a', 'c'])).toBe('1.50');
    expect(rawValueAt(text, ['a', 'b'])).toBe('[1, {"c":2}]');
    expect(rawValueAt(text, ['da'])).toBe('-0');
    expect(rawValueAt(text, ['n'])).toBe('null');
    expect(rawValueAt(text, ['a', 'x', 'y'])).toBeUndefined();
    expect(rawValueAt(text, ['zz'])).toBeUndefined();
  });
  it('splits an array into element texts', () => {
    expect(rawArrayElements('[ 1 , 2.0000000000000001,"x",[3],{"a":[4]} ]')).toEqual(['1', '2.0000000000000001', '"x"', '[3]', '{"a":[4]}']);
    expect(rawArrayElements('[]')).toEqual([]);
  });
});
