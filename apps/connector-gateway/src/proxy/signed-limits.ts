import type { CredentialState } from '@writ/grants';

/**
 * What a credential's token signs about its own limits: `max_uses` (its use limit) and
 * `budget_entries` (the task's limited `allowed` entries its calls are charged to), each absent
 * when there is none. `access_tokens` rows are not tagged: a database administrator can raise a
 * row's `max_uses` or clear its `budget_entries`; the gateway bounds the row by what the token
 * signs. `undefined` when a claim is present but not what Writ signs (refused as an invalid token).
 */
export interface SignedLimits {
  maxUses: number | null;
  budgetEntries: number[] | null;
}

function isCount(value: unknown, minimum: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= minimum;
}

/** The signed limits of a verified token's claims; `undefined` when malformed. */
export function signedLimitsOf(claims: Record<string, unknown>): SignedLimits | undefined {
  const { max_uses: maxUses, budget_entries: entries } = claims;
  if (maxUses !== undefined && !isCount(maxUses, 1)) return undefined;
  if (entries !== undefined && (!Array.isArray(entries) || entries.length === 0 || !entries.every((entry) => isCount(entry, 0)))) return undefined;
  return { maxUses: maxUses ?? null, budgetEntries: entries === undefined ? null : entries };
}

/**
 * The credential's state with its use limit and budget charge bounded by its token's claims:
 * the lower of the row's and the signed use limit (a row can only narrow it), and the signed
 * budget entries in place of the row's. A token without a claim, as issued before the claims
 * existed (or with no limit, or no budget), keeps the row's value: such credentials live
 * minutes, and with no signed limit the row can only narrow what the token was issued with
 * (see docs/security.md).
 */
export function boundBySignedLimits(state: CredentialState, signed: SignedLimits): CredentialState {
  const maxUses = signed.maxUses === null ? state.maxUses : state.maxUses === null ? signed.maxUses : Math.min(state.maxUses, signed.maxUses);
  const budgetEntries = signed.budgetEntries ?? state.budgetEntries;
  if (maxUses === state.maxUses && budgetEntries === state.budgetEntries) return state;
  return { ...state, maxUses, budgetEntries };
}
