import { decodeCursor, encodeCursor, isPositionInstant } from './list-cursor';
import { ValidationFailedError } from './http-exception.filter';

describe('list cursors', () => {
  it('accepts the instant of a position to the microsecond, and the older millisecond form', () => {
    expect(isPositionInstant('2026-05-01T00:00:00.123900Z')).toBe(true);
    expect(isPositionInstant('2026-05-01T00:00:00.123Z')).toBe(true);
    expect(isPositionInstant('2026-05-01T00:00:00Z')).toBe(true);
    expect(isPositionInstant('2024-02-29T23:59:59.999999Z')).toBe(true);
    expect(isPositionInstant('1970-01-01T00:00:00.000000Z')).toBe(true);
  });

  it('refuses what Date.parse rolls over or PostgreSQL would refuse, before it reaches a query', () => {
    // Date.parse reads these as another (real) instant; PostgreSQL refuses them with an error.
    expect(Number.isNaN(Date.parse('2026-02-30T00:00:00Z'))).toBe(false);
    for (const value of [
      '2026-02-30T00:00:00Z',
      '2025-02-29T00:00:00Z',
      '2026-04-31T00:00:00.000000Z',
      '2026-01-01T24:00:00Z',
      '2026-01-01T23:59:60Z',
      '2026-13-01T00:00:00Z',
      '0000-01-01T00:00:00Z',
      '1969-12-31T23:59:59.999999Z',
      '2026-01-01T00:00:00.1234567Z',
      '2026-01-01T00:00:00.Z',
      '2026-01-01T00:00:00+00:00',
      '2026-01-01T00:00:00.000000z',
      '2026-01-01 00:00:00Z',
      ' 2026-01-01T00:00:00Z',
      '2026-01-01T00:00:00Z\n',
      'infinity',
      '',
      undefined,
      null,
      1767225600000,
    ]) {
      expect({ value, accepted: isPositionInstant(value) }).toEqual({ value, accepted: false });
    }
  });

  it('decodes what it encodes, and refuses the rest as a 400 on cursor', () => {
    const accept = (value: unknown): value is { c: string } => isPositionInstant((value as { c?: unknown } | null)?.c);
    const position = { c: '2026-05-01T00:00:00.123900Z' };
    expect(decodeCursor(encodeCursor(position), accept)).toEqual(position);
    expect(decodeCursor(undefined, accept)).toBeUndefined();
    expect(() => decodeCursor(encodeCursor({ c: '2026-02-30T00:00:00Z' }), accept)).toThrow(ValidationFailedError);
    expect(() => decodeCursor('not base64!', accept)).toThrow(ValidationFailedError);
  });
});
