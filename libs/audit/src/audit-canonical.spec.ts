import { canonicalJsonText } from './audit-hash';
import { normaliseEventData } from './audit-canonical';

/** The two-pass normalisation the log used before `normaliseEventData`, kept as the reference; canonicalised as the verifier does. */
function reference(data: Record<string, unknown> | undefined): { value: unknown; canonical: string } {
  const lone = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
  const clean = (value: string) => value.replace(/\u0000/g, '').replace(lone, '\ufffd');
  const text = JSON.stringify(data ?? {}, function (this: unknown, _key, value: unknown) {
    if (typeof value === 'string') return clean(value);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const entries = Object.entries(value as Record<string, unknown>);
      if (entries.some(([name]) => clean(name) !== name)) return Object.fromEntries(entries.map(([name, member]) => [clean(name), member]));
    }
    return value;
  });
  const value = JSON.parse(text) as Record<string, unknown>;
  return { value, canonical: canonicalJsonText(value) };
}

const hostile: Array<[string, () => Record<string, unknown> | undefined]> = [
  ['undefined data', () => undefined],
  ['empty', () => ({})],
  [
    'plain event data',
    () => ({ jti: 'a', kind: 'connector', max_uses: null, authorization_details: [{ type: 'connector', actions: ['x'] }], scope: undefined }),
  ],
  ['NUL in values and names', () => ({ 'a\u0000b': 'c\u0000d', nested: { '\u0000': ['\u0000x', { 'k\u0000': 1 }] } })],
  ['lone surrogates', () => ({ high: 'x\ud800y', low: '\udc00', pair: '\ud83d\ude00', [`name\ud800`]: '\udfff\ud800' })],
  ['names colliding once cleaned (the later wins)', () => ({ ab: 1, 'a\u0000b': 2, 'a\u0000\u0000b': 3 })],
  [
    '__proto__ and constructor members',
    () => JSON.parse('{"__proto__":{"polluted":true},"constructor":{"prototype":1},"x":{"__proto__":[1]}}') as Record<string, unknown>,
  ],
  ['integer-like and unicode member order', () => ({ b: 1, a: 2, 10: 'ten', 2: 'two', '\u00e9': 3, e: 4, '\ud83d\ude00': 5, '\uff01': 6, '': 7, A: 8 })],
  ['numbers', () => ({ values: [0, -0, 1e21, 1e-7, 0.1 + 0.2, -1.5e300, 5e-324, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, NaN, Infinity, -Infinity] })],
  ['undefined, functions and symbols', () => ({ u: undefined, f: () => 1, s: Symbol('x'), list: [undefined, () => 1, Symbol('y'), 1] })],
  [
    'dates and toJSON',
    () => ({ at: new Date(Date.UTC(2030, 0, 2, 3, 4, 5, 6)), custom: { toJSON: (key: string) => ({ key, 'v\u0000': 'w\u0000' }) }, bad: new Date(NaN) }),
  ],
  ['boxed primitives', () => ({ n: Object(1) as unknown, s: Object('text') as unknown, b: Object(false) as unknown, list: [Object(2) as unknown] })],
  ['escapes and control characters', () => ({ text: '"quoted"\\back\\slash\n\t\r\b\f\u0001\u001f\u007f\u2028\u2029</script>' })],
  [
    'deep nesting',
    () => {
      let value: Record<string, unknown> = { leaf: 'x\u0000' };
      for (let depth = 0; depth < 200; depth += 1) value = { [`level${depth}`]: [value, depth] };
      return value;
    },
  ],
  [
    'shared (not circular) references',
    () => {
      const shared = { same: 'x' };
      return { a: shared, b: [shared, shared] };
    },
  ],
  ['sparse arrays and array-likes', () => ({ sparse: [1, , 3], arrayLike: { length: 2, 0: 'a' } })], // eslint-disable-line no-sparse-arrays
];

describe('normaliseEventData', () => {
  it.each(hostile)('equals the two-pass normalisation and canonicalisation byte for byte: %s', (_label, make) => {
    const expected = reference(make());
    const actual = normaliseEventData(make());
    expect(actual.canonical).toBe(expected.canonical);
    expect(actual.value).toEqual(expected.value);
    expect(JSON.stringify(actual.value)).toBe(JSON.stringify(expected.value));
    expect(Object.keys(actual.value)).toEqual(Object.keys(expected.value as object));
  });

  it('writes text jsonb accepts: no NUL, no lone surrogate', () => {
    const { canonical } = normaliseEventData({ 'k\u0000': 'v\u0000\ud800' });
    expect(canonical).toBe('{"k":"v\ufffd"}');
  });

  it('refuses what JSON.stringify refuses: a cycle, a BigInt', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => normaliseEventData(cyclic)).toThrow(TypeError);
    expect(() => normaliseEventData({ big: BigInt(1) })).toThrow(TypeError);
  });
});
