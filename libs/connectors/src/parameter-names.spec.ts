import { foldCase, normalParameterName, parameterNameForms, sameParameterName } from './parameter-names';

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

describe('parameterNameForms and sameParameterName (PHP registers names as C strings)', () => {
  it.each([
    ['repo\u0000', 'repo'],
    ['repo\u0000evil', 'repo'],
    ['_method\u0000', '_method'],
    ['re[po', 're_po'],
    ['payout[id', 'payout_id'],
    ['a[b.c', 'a_b_c'],
    ['a[b.c', 'a_b.c'],
    [' Re.po', 're_po'],
  ])('reads %p also as %p', (name, form) => {
    expect(parameterNameForms(name)).toContain(form);
  });

  it('keeps the lenient forms it had, and names no framework merges apart', () => {
    expect(parameterNameForms('repo[]')).toEqual(['repo']);
    expect(parameterNameForms('re[po')).toContain('re');
    expect(sameParameterName('REPO', 'repo')).toBe(true);
    expect(sameParameterName('payout[id', 'payout_id')).toBe(true);
    expect(sameParameterName('repo\u0000x', 'repo')).toBe(true);
    expect(sameParameterName('repos', 'repo')).toBe(false);
    expect(sameParameterName('payout_ids', 'payout_id')).toBe(false);
    expect(sameParameterName('re\u0000po', 're_po')).toBe(false);
  });
});
