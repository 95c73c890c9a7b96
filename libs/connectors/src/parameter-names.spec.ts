import { foldCase, normalParameterName } from './parameter-names';

describe('foldCase', () => {
  it.each([
    ['amount', 'Amount'],
    ['amount', 'AMOUNT'],
    ['s', 'ſ'],
    ['k', '\u212a'],
    ['destination', 'de\u017ftination'],
  ])('folds %p and %p to one name', (a, b) => {
    expect(foldCase(a)).toBe(foldCase(b));
  });

  it('keeps distinct names distinct', () => {
    expect(foldCase('amount')).not.toBe(foldCase('amounts'));
    expect(foldCase('a_b')).not.toBe(foldCase('a-b'));
  });
});

describe('normalParameterName', () => {
  it.each([
    ['repo', 'repo'],
    ['REPO', 'repo'],
    [' repo', 'repo'],
    ['   repo', 'repo'],
    ['repo[]', 'repo'],
    ['repo[x][y]', 'repo'],
    ['re.po', 're_po'],
    ['re po', 're_po'],
    ['re_po', 're_po'],
    ['_METHOD', '_method'],
    ['_method[]', '_method'],
    ['\u212aey', 'key'],
  ])('reads %p as %p', (name, normal) => {
    expect(normalParameterName(name)).toBe(normal);
  });
});
