/**
 * `digits` × 10^`exponent` of an unsigned decimal text (`12.50`, `1e3`, `0.0`), with no leading
 * or trailing zero digits (zero is `0e0`): two texts denote the same number exactly when their
 * canonical forms are equal. Text that is not an unsigned decimal is returned as it is.
 */
export function canonicalDecimal(text: string): string {
  const match = /^(\d+)(?:\.(\d+))?(?:e([-+]?\d+))?$/i.exec(text);
  if (!match) return text;
  const fraction = match[2] ?? '';
  let digits = (match[1] + fraction).replace(/^0+/, '');
  let exponent = Number(match[3] ?? 0) - fraction.length;
  if (digits === '') return '0e0';
  while (digits.endsWith('0')) {
    digits = digits.slice(0, -1);
    exponent += 1;
  }
  return `${digits}e${exponent}`;
}

/**
 * True when the JSON number text `raw` denotes exactly the number that `value` (what
 * `Number(raw)` gave) writes back as: `9007199254740993` reads as ...992, `1e-400` as 0 and
 * `0.30000000000000001` as 0.3, so what would be checked, stored and audited is another number
 * than the one sent. `-0` is 0.
 */
export function numberTextIsExact(raw: string, value: number): boolean {
  if (!Number.isFinite(value)) return false;
  return canonicalDecimal(raw.replace(/^-/, '')) === canonicalDecimal(String(Math.abs(value)));
}
