import type { ConnectorDetail } from '@writ/database';
import { checkWithinAllowed, type ConstraintOperatorLookup } from '@writ/oauth';
import type { DeclaredEntry } from './task-limits';

/**
 * The indexes of the task's `allowed` entries that declare `limits` and cover a granted
 * detail (its actions among the entry's, every declared constraint present and no wider).
 * A credential is charged to every such entry: an agent cannot escape a limit by asking for
 * a credential that another, unlimited entry would also cover. Empty: the credential has no
 * budget (the gateway's hot path is unchanged).
 */
export function limitedEntriesCovering(detail: ConnectorDetail, allowed: DeclaredEntry[], operators: ConstraintOperatorLookup): number[] {
  const covering: number[] = [];
  allowed.forEach((entry, index) => {
    if (!entry.limits) return;
    if (entry.connector !== detail.connector) return;
    if (checkWithinAllowed(detail, [entry], operators).within) covering.push(index);
  });
  return covering;
}
