import type { ConnectorOperation, ConstraintBinding } from '@writ/database';
import { matchConstraint, parseDecimalString } from '@writ/oauth';

/** The parts of a request that constraints read, as it will be forwarded. */
export interface ConstrainedRequest {
  /** Decoded path parameters of the matched template. */
  pathParams: Record<string, string>;
  /** The raw query string (without `?`). */
  query: string;
  /** The parsed JSON body, or `undefined` when the request has none. */
  body: unknown;
}

/** One constraint as checked (values go to the audit event). */
export interface CheckedConstraint {
  name: string;
  in: ConstraintBinding['in'];
  op: ConstraintBinding['op'];
  granted: unknown;
  actual: unknown;
  ok: boolean;
}

/** The outcome of checking a request against a grant's constraints. */
export interface ConstraintCheck {
  checked: CheckedConstraint[];
  /** The first failed rule, `constraint:<name>`, and why. */
  failure?: { rule: string; description: string };
}

const MISSING = Symbol('missing');
const AMBIGUOUS = Symbol('ambiguous');

function bodyField(body: unknown, field: string): unknown {
  let current: unknown = body;
  for (const key of field.split('.')) {
    if (current === null || typeof current !== 'object' || Array.isArray(current) || !Object.hasOwn(current, key)) return MISSING;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

function queryField(query: string, field: string): string | typeof MISSING | typeof AMBIGUOUS {
  const values = new URLSearchParams(query).getAll(field);
  if (values.length === 0) return MISSING;
  if (values.length > 1) return AMBIGUOUS;
  return values[0];
}

/** Reads a path or query string the way the granted value is typed (numbers and booleans from their text). */
function typedLike(granted: unknown, text: string): unknown {
  const sample = Array.isArray(granted) ? granted[0] : granted;
  if (typeof sample === 'number') return parseDecimalString(text) ?? text;
  if (typeof sample === 'boolean') return text === 'true' ? true : text === 'false' ? false : text;
  return text;
}

/**
 * Checks every constraint of the grant against the request as it will be forwarded. A
 * constraint the operation does not bind, a missing or repeated field, a type mismatch or a
 * value outside the grant fails, naming the rule. Nothing is coerced beyond reading path and
 * query text as the granted type (plain decimals only).
 */
export function checkConstraints(
  operation: ConnectorOperation,
  granted: Record<string, unknown> | undefined,
  request: ConstrainedRequest,
): ConstraintCheck {
  const checked: CheckedConstraint[] = [];
  for (const [name, grantedValue] of Object.entries(granted ?? {})) {
    const binding = operation.constraints?.[name];
    if (!binding) {
      return { checked, failure: { rule: `constraint:${name}`, description: `constraint ${name} is not bound by operation ${operation.name}` } };
    }
    let actual: unknown;
    if (binding.in === 'path') {
      actual = Object.hasOwn(request.pathParams, binding.field) ? typedLike(grantedValue, request.pathParams[binding.field]) : MISSING;
    } else if (binding.in === 'query') {
      const raw = queryField(request.query, binding.field);
      if (raw === AMBIGUOUS) {
        return { checked, failure: { rule: `constraint:${name}`, description: `query parameter ${binding.field} is repeated` } };
      }
      actual = raw === MISSING ? MISSING : typedLike(grantedValue, raw);
    } else {
      actual = request.body === undefined ? MISSING : bodyField(request.body, binding.field);
    }
    if (actual === MISSING) {
      checked.push({ name, in: binding.in, op: binding.op, granted: grantedValue, actual: null, ok: false });
      return { checked, failure: { rule: `constraint:${name}`, description: `${binding.in} field ${binding.field} is required by constraint ${name}` } };
    }
    const ok = matchConstraint(binding.op, grantedValue, actual);
    checked.push({ name, in: binding.in, op: binding.op, granted: grantedValue, actual, ok });
    if (!ok) {
      return {
        checked,
        failure: { rule: `constraint:${name}`, description: `${binding.in} field ${binding.field} is outside the granted ${name} (${binding.op})` },
      };
    }
  }
  return { checked };
}

/** True when the operation reads any of the granted constraints from the body. */
export function needsBody(operation: ConnectorOperation, granted: Record<string, unknown> | undefined): boolean {
  return Object.keys(granted ?? {}).some((name) => operation.constraints?.[name]?.in === 'body');
}
