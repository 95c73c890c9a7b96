import { compilePathTemplate, PathTemplate, templateCovers, withParameterValue } from '@writ/connectors';
import type { ConnectorDetail, ConnectorOperation, ConstraintBinding } from '@writ/database';
import { checkWithinAllowed, type ConstraintOperatorLookup } from '@writ/oauth';

/** A connector's catalogue as the floor reads it. */
export interface FloorConnector {
  id: string;
  operations: ConnectorOperation[];
}

/** The catalogue's operator of a constraint, for the connectors given. */
export function operatorsOf(connectors: readonly FloorConnector[]): ConstraintOperatorLookup {
  return (connectorId, action, name) =>
    connectors.find((candidate) => candidate.id === connectorId)?.operations.find((candidate) => candidate.name === action)?.constraints?.[name]?.op;
}

/** Whether every number `op value` admits lies inside the catalogue's bounds (`min`/`max`). */
function withinBounds(binding: ConstraintBinding, value: unknown): boolean {
  const inside = (n: unknown) =>
    typeof n === 'number' && Number.isFinite(n) && (binding.min === undefined || n >= binding.min) && (binding.max === undefined || n <= binding.max);
  switch (binding.op) {
    case 'lte':
      return typeof value === 'number' && Number.isFinite(value) && (binding.max === undefined || value <= binding.max);
    case 'gte':
      return typeof value === 'number' && Number.isFinite(value) && (binding.min === undefined || value >= binding.min);
    case 'in':
      return Array.isArray(value) && value.every(inside);
    default:
      return inside(value);
  }
}

/** The granted constraints that admit values outside the catalogue's `min`/`max` of the operation. */
function boundViolations(detail: ConnectorDetail, operation: ConnectorOperation): string[] {
  const violations: string[] = [];
  for (const [name, value] of Object.entries(detail.constraints ?? {})) {
    const binding = operation.constraints?.[name];
    if (!binding || (binding.min === undefined && binding.max === undefined)) continue;
    if (!withinBounds(binding, value)) {
      violations.push(
        `constraint ${name} (${binding.op} ${JSON.stringify(value)}) admits values outside the catalogue's bounds of ${operation.name}: ${binding.min ?? '-∞'} to ${binding.max ?? '∞'}`,
      );
    }
  }
  return violations;
}

function compiled(path: string): PathTemplate | undefined {
  try {
    return compilePathTemplate(path);
  } catch {
    return undefined;
  }
}

/**
 * The granted path constraint values that name a path of another operation: `{"id": "export"}`
 * for `GET /items/{id}` beside `GET /items/export`. The gateway runs the most specific template
 * a request matches, so no call with that value is ever this operation (it is refused, or is
 * the other one): the grant would tell the policy of a call that cannot happen.
 */
function shadowedPathValues(detail: ConnectorDetail, operation: ConnectorOperation, operations: readonly ConnectorOperation[]): string[] {
  const violations: string[] = [];
  const template = compiled(operation.path);
  if (!template) return violations;
  const rivals = operations
    .filter((other) => other !== operation && other.method.toUpperCase() === operation.method.toUpperCase())
    .map((other) => ({ other, template: compiled(other.path) }))
    // Only templates strictly more specific than this one can take its paths.
    .filter(
      (entry): entry is { other: ConnectorOperation; template: PathTemplate } =>
        entry.template !== undefined && templateCovers(template, entry.template) && !templateCovers(entry.template, template),
    );
  if (rivals.length === 0) return violations;
  for (const [name, value] of Object.entries(detail.constraints ?? {})) {
    const binding = operation.constraints?.[name];
    if (!binding || binding.in !== 'path' || (binding.op !== 'eq' && binding.op !== 'in')) continue;
    const values = Array.isArray(value) ? value : [value];
    for (const member of values) {
      if (typeof member !== 'string' && typeof member !== 'number') continue;
      const narrowed = withParameterValue(template, binding.field, String(member));
      const rival = narrowed && rivals.find((entry) => templateCovers(entry.template, narrowed));
      if (rival) {
        violations.push(
          `constraint ${name} (${binding.op} ${JSON.stringify(value)}) gives ${operation.path} a path of operation ${rival.other.name} (${rival.other.path}), not of ${operation.name}: the gateway runs the most specific operation a path matches`,
        );
        break;
      }
    }
  }
  return violations;
}

/**
 * The contract's floor under any policy, as one pure function: what the token endpoint refuses
 * whatever the policy says (and what a policy dry run reports). A credential covers exactly one
 * connector and one action, names an operation of the catalogue, stays inside the task's
 * declared `allowed`, grants no constraint value beyond the catalogue's `min`/`max`, and no
 * path constraint value that names another operation's path ({@link shadowedPathValues}) (the
 * gateway would refuse those calls anyway; the exchange refuses the grant). Empty: no violation.
 */
export function grantFloorViolations(
  details: readonly ConnectorDetail[],
  allowed: readonly ConnectorDetail[],
  connectors: readonly FloorConnector[],
): string[] {
  if (details.length !== 1 || details[0].actions.length !== 1) return ['a credential covers exactly one connector and one action'];
  const detail = details[0];
  const connector = connectors.find((candidate) => candidate.id === detail.connector);
  const operation = connector?.operations.find((candidate) => candidate.name === detail.actions[0]);
  if (!connector || !operation) return [`operation ${detail.actions[0]} is not in the catalogue of connector ${detail.connector}`];
  return [
    ...checkWithinAllowed(detail, allowed, operatorsOf([connector])).violations,
    ...boundViolations(detail, operation),
    ...shadowedPathValues(detail, operation, connector.operations),
  ];
}
