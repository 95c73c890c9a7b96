import { quoteToken } from '../util/safe-description';
import type { ConnectorAuthorizationDetail, ConstraintOperator, ConstraintOperatorLookup, ConstraintValue } from './authorization-details.types';
import { jsonValuesEqual } from './match-constraint';

/** Result of {@link checkWithinAllowed}: `violations` is empty exactly when `within`. */
export interface WithinAllowedResult {
  readonly within: boolean;
  readonly violations: readonly string[];
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function isFlatArray(value: unknown): value is Array<string | number> {
  return Array.isArray(value) && value.every((element) => typeof element === 'string' || isFiniteNumber(element));
}

/** Whether `value` is a meaningful grant value for `op` (what `matchConstraint` can ever satisfy). */
export function isValidConstraintValue(op: ConstraintOperator, value: unknown): value is ConstraintValue {
  switch (op) {
    case 'eq':
      return typeof value === 'string' || typeof value === 'boolean' || isFiniteNumber(value) || isFlatArray(value);
    case 'lte':
    case 'gte':
      return isFiniteNumber(value);
    case 'in':
      return isFlatArray(value);
    default:
      return false;
  }
}

/**
 * Whether a requested constraint value is no wider than the declared one under `op`:
 * `eq` equal, `lte` requested ≤ declared, `gte` requested ≥ declared, `in` requested
 * array ⊆ declared array. Any type mismatch (`"50000"` vs `50000`, a scalar for `in`,
 * a boolean for `lte`) counts as wider.
 */
export function isConstraintWithin(op: ConstraintOperator, declared: unknown, requested: unknown): boolean {
  if (!isValidConstraintValue(op, declared) || !isValidConstraintValue(op, requested)) return false;
  switch (op) {
    case 'eq':
      return jsonValuesEqual(declared, requested);
    case 'lte':
      return (requested as number) <= (declared as number);
    case 'gte':
      return (requested as number) >= (declared as number);
    case 'in':
      return (requested as Array<string | number>).every((element) => (declared as Array<string | number>).some((allowed) => allowed === element));
    default:
      return false;
  }
}

type OperatorResolution = { op: ConstraintOperator } | { conflict: true } | undefined;

function resolveOperator(operators: ConstraintOperatorLookup, connector: string, actions: readonly string[], name: string): OperatorResolution {
  const found = new Set<ConstraintOperator>();
  for (const action of actions) {
    const op = operators(connector, action, name);
    if (op !== undefined) found.add(op);
  }
  if (found.size === 0) return undefined;
  if (found.size > 1) return { conflict: true };
  return { op: [...found][0] };
}

interface CandidateViolations {
  /** Requested actions the entry lacks: an entry covering the actions is the closer one. */
  readonly actions: number;
  readonly violations: string[];
}

function violationsAgainst(
  requested: ConnectorAuthorizationDetail,
  allowed: ConnectorAuthorizationDetail,
  operators: ConstraintOperatorLookup,
): CandidateViolations {
  const violations: string[] = [];
  const { connector } = requested;
  const allowedActions = new Set(allowed.actions);
  for (const action of requested.actions) {
    if (!allowedActions.has(action)) {
      violations.push(`action ${quoteToken(action)} is not allowed by the task for connector ${quoteToken(connector)}`);
    }
  }
  const actionViolations = violations.length;

  const requestedConstraints = requested.constraints ?? {};
  const declaredConstraints = allowed.constraints ?? {};
  const has = (object: object, name: string) => Object.hasOwn(object, name);

  for (const name of Object.keys(declaredConstraints)) {
    if (!has(requestedConstraints, name)) {
      violations.push(`constraint ${quoteToken(name)} is required by the task`);
      continue;
    }
    // The operator comes from the requested operations; a declared constraint that none of
    // them uses is compared with the operator of the task's operations instead.
    const resolution = resolveOperator(operators, connector, requested.actions, name) ?? resolveOperator(operators, connector, allowed.actions, name);
    if (resolution === undefined) {
      violations.push(`constraint ${quoteToken(name)} is not defined for the requested actions`);
    } else if ('conflict' in resolution) {
      violations.push(`constraint ${quoteToken(name)} has conflicting operators across the requested actions`);
    } else if (!isConstraintWithin(resolution.op, declaredConstraints[name], requestedConstraints[name])) {
      violations.push(`constraint ${quoteToken(name)} is wider than the task allows`);
    }
  }

  for (const name of Object.keys(requestedConstraints)) {
    if (has(declaredConstraints, name)) continue;
    // Not declared by the task: only narrows, but it must mean something to the gateway.
    const resolution = resolveOperator(operators, connector, requested.actions, name);
    if (resolution === undefined) {
      violations.push(`constraint ${quoteToken(name)} is not defined for the requested actions`);
    } else if ('conflict' in resolution) {
      violations.push(`constraint ${quoteToken(name)} has conflicting operators across the requested actions`);
    } else if (!isValidConstraintValue(resolution.op, requestedConstraints[name])) {
      violations.push(`constraint ${quoteToken(name)} has a value that is not valid for operator ${resolution.op}`);
    }
  }

  if (requested.locations !== undefined) {
    const allowedLocations = new Set(allowed.locations ?? []);
    if (!requested.locations.every((location) => allowedLocations.has(location))) {
      violations.push("locations are not within the task's allowed locations");
    }
  }
  return { actions: actionViolations, violations };
}

/**
 * The contract's subset rule, applied by the server after the policy as a defence in
 * depth: `requested` must fit inside ONE `allowed` entry of the same connector: its
 * actions a subset; every constraint that entry declares present and no wider (see
 * {@link isConstraintWithin}); any extra requested constraint known to the catalogue (by
 * `operators`) and valid for its operator; its `locations`, if any, among the entry's.
 * When no entry fits, the violations of the closest entry (fewest missing actions, then
 * fewest violations) are returned.
 */
export function checkWithinAllowed(
  requested: ConnectorAuthorizationDetail,
  allowed: readonly ConnectorAuthorizationDetail[],
  operators: ConstraintOperatorLookup,
): WithinAllowedResult {
  const candidates = allowed.filter((entry) => entry.type === requested.type && entry.connector === requested.connector);
  if (requested.type !== 'connector' || candidates.length === 0) {
    const violation = `connector ${quoteToken(String(requested.connector))} is not allowed by the task`;
    return { within: false, violations: [violation] };
  }
  let best: CandidateViolations | undefined;
  for (const candidate of candidates) {
    const result = violationsAgainst(requested, candidate, operators);
    if (result.violations.length === 0) return { within: true, violations: [] };
    const closer =
      best === undefined || result.actions < best.actions || (result.actions === best.actions && result.violations.length < best.violations.length);
    if (closer) best = result;
  }
  return { within: false, violations: best?.violations ?? [] };
}
