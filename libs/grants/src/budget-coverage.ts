import type { ConnectorDetail } from '@writ/database';
import { checkWithinAllowed, type ConstraintOperatorLookup } from '@writ/oauth';
import type { DeclaredEntry } from './task-limits';

/**
 * The indexes of the task's `allowed` entries that declare `limits` and cover a granted
 * detail (its actions among the entry's, every declared constraint present and no wider).
 * A credential is charged to every such entry: an agent cannot escape a limit by asking for
 * a credential that another, unlimited entry would also cover. Empty: the credential has no
 * budget (the gateway's hot path is unchanged).
 *
 * `locations` play no part: the only location a declaration or an exchange accepts is the
 * connector's own URL, which narrows nothing. Compared as the floor compares them, a detail
 * naming it would not be covered by a limited entry that does not, and would be charged to
 * nothing when an unlimited entry that names it also allows it.
 */
export function limitedEntriesCovering(detail: ConnectorDetail, allowed: DeclaredEntry[], operators: ConstraintOperatorLookup): number[] {
  const covering: number[] = [];
  const asked = withoutLocations(detail);
  allowed.forEach((entry, index) => {
    if (!entry.limits) return;
    if (entry.connector !== detail.connector) return;
    if (checkWithinAllowed(asked, [withoutLocations(entry)], operators).within) covering.push(index);
  });
  return covering;
}

function withoutLocations<T extends ConnectorDetail>(detail: T): Omit<T, 'locations'> {
  const { locations: _locations, ...rest } = detail;
  return rest;
}
