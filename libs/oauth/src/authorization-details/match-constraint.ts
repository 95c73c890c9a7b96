import type { ConstraintOperator } from './authorization-details.types';

type Scalar = string | number | boolean;

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function isScalar(value: unknown): value is Scalar {
  return typeof value === 'string' || typeof value === 'boolean' || isFiniteNumber(value);
}

/** Strict equality of JSON scalars or flat arrays of them, without any type coercion. */
export function jsonValuesEqual(a: unknown, b: unknown): boolean {
  if (isScalar(a) || isScalar(b)) return a === b;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((element, index) => isScalar(element) && element === b[index]);
  }
  return false;
}

/**
 * The gateway-side check of one request value (`actual`, as it will be forwarded) against
 * a granted constraint value. `eq`: strictly equal (`"50000"` is not `50000`); `lte` /
 * `gte`: both finite numbers and `actual` not above / not below `granted`; `in`: `granted`
 * is an array and `actual` one of its elements, or, if `actual` is a non-empty array, every
 * element of it is (an empty array fails: some upstreams read `[]` as "no filter", i.e. all).
 * Missing values, unknown operators and any type mismatch fail.
 */
export function matchConstraint(op: ConstraintOperator, grantedValue: unknown, actualValue: unknown): boolean {
  switch (op) {
    case 'eq':
      return grantedValue !== undefined && jsonValuesEqual(grantedValue, actualValue);
    case 'lte':
      return isFiniteNumber(grantedValue) && isFiniteNumber(actualValue) && actualValue <= grantedValue;
    case 'gte':
      return isFiniteNumber(grantedValue) && isFiniteNumber(actualValue) && actualValue >= grantedValue;
    case 'in': {
      if (!Array.isArray(grantedValue)) return false;
      const allowed = (element: unknown) => (typeof element === 'string' || isFiniteNumber(element)) && grantedValue.some((g) => g === element);
      return Array.isArray(actualValue) ? actualValue.length > 0 && actualValue.every(allowed) : allowed(actualValue);
    }
    default:
      return false;
  }
}

/**
 * Reads a path or query value as a number for `lte`/`gte` (they arrive as strings):
 * plain decimal notation only, so `""`, `" 1"`, `"0x10"`, `"1e3"`, `"Infinity"` are not
 * numbers (unlike `Number()`). Returns `undefined` when the string is not one.
 */
export function parseDecimalString(value: string): number | undefined {
  if (!/^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/.test(value)) return undefined;
  const number = Number(value);
  return Number.isFinite(number) ? number : undefined;
}
