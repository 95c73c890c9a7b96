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
    ['key differing in case only (Go, ASP.NET)', '{"amount":100,"Amount":99999999}', 'Amount'],
    ['nested key differing in case only', '{"a":{"to":"x","TO":"y"}}', 'TO'],
    ['long s for s', '{"destination":"acct_1","de\u017ftination":"acct_evil"}', 'de\u017ftination'],
    ['Kelvin sign for k', '{"kind":"a","\u212aind":"b"}', '\u212aind'],
    ['long s, escaped', '{"s":1,"\\u017f":2}', '\u017f'],
  ])('refuses a %s', (_name, text, key) => {
    expect(findDuplicateKey(text)).toBe(key);
    expect(() => parseStrictJson(text)).toThrow(StrictJsonError);
  });

  it('names both spellings of a key repeated in another case', () => {
    expect(() => parseStrictJson('{"amount":100,"AMOUNT":1}')).toThrow('the body repeats the key "amount" as "AMOUNT"');
    expect(() => parseStrictJson('{"amount":1,"amount":2}')).toThrow(/^the body repeats the key "amount"$/);
  });

  it('accepts distinct keys, the same key in different objects, and case variants in values', () => {
    expect(parseStrictJson('{"a":{"id":1},"b":{"id":2,"ID2":3},"c":"Amount","amount":"AMOUNT"}')).toMatchObject({ amount: 'AMOUNT' });
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
