import { findDuplicateKey, parseStrictJson, StrictJsonError } from './strict-json';

describe('parseStrictJson', () => {
  it('parses valid JSON without duplicates', () => {
    expect(parseStrictJson('{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}],"d":"x\\"a\\":"}')).toEqual({
      a: 1,
      b: { a: 2 },
      c: [{ a: 3 }, { a: 4 }],
      d: 'x"a":',
    });
  });

  it.each([
    ['top-level duplicate', '{"amount":1,"amount":100000}', 'amount'],
    ['nested duplicate', '{"a":{"x":1,"y":2,"x":3}}', 'x'],
    ['duplicate inside an array element', '[{"k":1},{"k":1,"k":2}]', 'k'],
    ['escaped spelling of the same key', '{"amount":1,"\\u0061mount":2}', 'amount'],
    ['duplicate after a nested object', '{"a":{"b":1},"a":2}', 'a'],
  ])('refuses a %s', (_name, text, key) => {
    expect(findDuplicateKey(text)).toBe(key);
    expect(() => parseStrictJson(text)).toThrow(StrictJsonError);
  });

  it('does not mistake string values for keys', () => {
    expect(findDuplicateKey('{"a":"a","b":["a","a"],"c":"\\\\"}')).toBeUndefined();
  });

  it('refuses invalid JSON', () => {
    expect(() => parseStrictJson('{"a":1,}')).toThrow('not valid JSON');
  });
});

describe('parseStrictJson: hostile input', () => {
  it.each([
    ['{"amount":1,"__proto__":{"amount":2}}', 'body.__proto__ is a forbidden member name'],
    ['{"a":{"constructor":1}}', 'body.a.constructor is a forbidden member name'],
    ['{"destination":"\\ud800"}', 'body.destination contains a lone UTF-16 surrogate (not valid Unicode)'],
    ['{"amount":1e400}', 'body.amount is a number out of range'],
    ['{"a":' + '['.repeat(40) + ']'.repeat(40) + '}', 'nests deeper than 32 levels'],
  ])('refuses %s', (text, message) => {
    expect(() => parseStrictJson(text)).toThrow(message);
  });
});
