import { quoteToken, safeToken } from './safe-description';

describe('safeToken', () => {
  it('keeps printable ASCII untouched', () => {
    expect(safeToken('grant_type')).toBe('grant_type');
  });

  it('replaces control characters so a description cannot inject header lines', () => {
    expect(safeToken('a\r\nSet-Cookie: x')).toBe('a??Set-Cookie: x');
  });

  it('replaces non-ASCII characters', () => {
    expect(safeToken('caf\u00e9\u202e')).toBe('caf??');
  });

  it('truncates long values', () => {
    const rendered = safeToken('x'.repeat(500));
    expect(rendered).toBe(`${'x'.repeat(64)}...`);
  });
});

describe('quoteToken', () => {
  it('quotes and neutralises inner quotes', () => {
    expect(quoteToken('a"b')).toBe(`"a'b"`);
  });
});
