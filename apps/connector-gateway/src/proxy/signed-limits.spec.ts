import type { CredentialState } from '@writ/grants';
import { boundBySignedLimits, signedLimitsOf } from './signed-limits';

const state = (maxUses: number | null, budgetEntries: number[] | null): CredentialState => ({
  jti: 'j',
  taskId: 't',
  budgetEntries,
  declaredBudgets: [],
  declaredActions: [],
  revoked: false,
  expired: false,
  uses: 0,
  maxUses,
  taskStatus: 'active',
  taskExpired: false,
  taskUser: null,
  connector: null,
  expiresAtMs: 0,
  taskExpiresAtMs: null,
});

describe('signed limits', () => {
  it('reads the claims Writ signs, and refuses anything else', () => {
    expect(signedLimitsOf({})).toEqual({ maxUses: null, budgetEntries: null });
    expect(signedLimitsOf({ max_uses: 1, budget_entries: [0, 2] })).toEqual({ maxUses: 1, budgetEntries: [0, 2] });
    for (const claims of [
      { max_uses: 0 },
      { max_uses: 1.5 },
      { max_uses: '1' },
      { max_uses: null },
      { budget_entries: [] },
      { budget_entries: [-1] },
      { budget_entries: '0' },
    ]) {
      expect(signedLimitsOf(claims)).toBeUndefined();
    }
  });

  it('bounds the row by the signed use limit: raised or cleared by hand, the claim holds', () => {
    expect(boundBySignedLimits(state(1000, null), { maxUses: 1, budgetEntries: null }).maxUses).toBe(1);
    expect(boundBySignedLimits(state(null, null), { maxUses: 1, budgetEntries: null }).maxUses).toBe(1);
    // The row may narrow it.
    expect(boundBySignedLimits(state(0, null), { maxUses: 1, budgetEntries: null }).maxUses).toBe(0);
  });

  it('takes the signed budget entries over the row', () => {
    expect(boundBySignedLimits(state(1, null), { maxUses: 1, budgetEntries: [1] }).budgetEntries).toEqual([1]);
    expect(boundBySignedLimits(state(1, [3]), { maxUses: 1, budgetEntries: [1] }).budgetEntries).toEqual([1]);
  });

  it('keeps the row as it is for a token without the claims (issued before them, or with no limit or budget)', () => {
    const old = state(5, [0]);
    expect(boundBySignedLimits(old, { maxUses: null, budgetEntries: null })).toBe(old);
  });
});
