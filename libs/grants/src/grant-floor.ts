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

/**
 * The contract's floor under any policy, as one pure function: what the token endpoint refuses
 * whatever the policy says (and what a policy dry run reports). A credential covers exactly one
 * connector and one action, names an operation of the catalogue, stays inside the task's
 * declared `allowed`, and grants no constraint value beyond the catalogue's `min`/`max` (the
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
  return [...checkWithinAllowed(detail, allowed, operatorsOf([connector])).violations, ...boundViolations(detail, operation)];
}
