import { canonicalJson } from './canonical-json';

describe('canonicalJson (RFC 8785)', () => {
  it('sorts members, drops whitespace, and writes numbers as ECMAScript does', () => {
    expect(canonicalJson(JSON.parse('{ "b": [1.0, 1e3, -0, "x"], "a": {"d": null, "c": true} }'))).toBe('{"a":{"c":true,"d":null},"b":[1,1000,0,"x"]}');
  });

  it('sorts keys by UTF-16 code units', () => {
    expect(canonicalJson({ é: 1, z: 2, Z: 3, '\u{1F600}': 4, '\uFB33': 5 })).toBe('{"Z":3,"z":2,"é":1,"\u{1F600}":4,"\uFB33":5}');
  });

  it('sorts the members of an object with a member named toJSON too, so its version does not depend on their order', () => {
    // jsonb (where stored policy data is kept) gives members back shortest first.
    const written = JSON.parse('{"config": {"toJSON": 1, "zz": 2, "a": [{"toJSON": "x", "b": 1, "aaa": 2}]}}');
    const stored = JSON.parse('{"config": {"a": [{"b": 1, "aaa": 2, "toJSON": "x"}], "zz": 2, "toJSON": 1}}');
    expect(canonicalJson(written)).toBe('{"config":{"a":[{"aaa":2,"b":1,"toJSON":"x"}],"toJSON":1,"zz":2}}');
    expect(canonicalJson(stored)).toBe(canonicalJson(written));
  });

  it('refuses what JSON cannot hold', () => {
    expect(() => canonicalJson(Infinity)).toThrow(TypeError);
    expect(() => canonicalJson(() => 1)).toThrow(TypeError);
  });
});
