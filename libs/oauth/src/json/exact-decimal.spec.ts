import { canonicalDecimal, numberTextIsExact } from './exact-decimal';

describe('canonicalDecimal', () => {
  it.each([
    ['600', '6e2'],
    ['600.0', '6e2'],
    ['6e2', '6e2'],
    ['0.000', '0e0'],
    ['0.5', '5e-1'],
    ['1e+21', '1e21'],
  ])('%s is %s', (text, canonical) => expect(canonicalDecimal(text)).toBe(canonical));
});

describe('numberTextIsExact', () => {
  it.each(['0', '-0', '1', '600.0', '6e2', '0.1', '0.3', '-42.5', '9007199254740991', '9007199254740992', '1e300', '5e-324', '1.7976931348623157e308'])(
    'keeps %s',
    (text) => expect(numberTextIsExact(text, Number(text))).toBe(true),
  );

  it.each(['9007199254740993', '-9007199254740993', '18446744073709551617', '1e-400', '0.30000000000000001', '30000.000000000000001', '1e400'])(
    'refuses %s (it reads as another number)',
    (text) => expect(numberTextIsExact(text, Number(text))).toBe(false),
  );
});
