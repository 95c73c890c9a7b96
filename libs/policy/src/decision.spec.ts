import { denyDecision, normalizeDecision } from './decision';

const allow = { allow: true, reasons: ['ok'], max_ttl_seconds: 120, max_uses: 1 };

describe('normalizeDecision', () => {
  it.each([
    ['undefined', undefined, 'the policy returned no decision'],
    ['an empty result set', [], 'the policy returned no decision'],
    ['a non-array', { result: allow }, 'the policy returned no decision'],
    ['two results', [{ result: allow }, { result: allow }], 'the policy returned more than one decision'],
    ['a result entry without result', [{ expressions: [allow] }], 'the policy decision is not an object'],
    ['a null entry', [null], 'the policy decision is not an object'],
  ])('denies %s', (_name, resultSet, reason) => {
    expect(normalizeDecision(resultSet)).toEqual(denyDecision([reason]));
  });

  it('accepts a well-formed allow', () => {
    expect(normalizeDecision([{ result: allow }])).toEqual({
      ...allow,
      requires_approval: false,
      quarantine: false,
      out_of_purpose: false,
    });
  });

  it('never lets allow through unless it is exactly true', () => {
    for (const value of [1, 'true', 'yes', {}, [true], null]) {
      expect(normalizeDecision([{ result: { ...allow, allow: value } }]).allow).toBe(false);
    }
  });

  it.each([Infinity, -1, 0.5, NaN])('denies max_ttl_seconds %p', (ttl) => {
    expect(normalizeDecision([{ result: { ...allow, max_ttl_seconds: ttl } }]).allow).toBe(false);
  });

  it.each([0, -1, 2.5, '1', undefined])('denies max_uses %p', (uses) => {
    expect(normalizeDecision([{ result: { ...allow, max_uses: uses } }]).allow).toBe(false);
  });

  it.each([2 ** 31, 3_000_000_000, 1e300])('denies max_uses %p, beyond what a credential can record', (uses) => {
    const decision = normalizeDecision([{ result: { ...allow, max_uses: uses } }]);
    expect(decision.allow).toBe(false);
    expect(decision.reasons).toEqual([`malformed policy decision: max_uses must be a positive integer up to ${2 ** 31 - 1}, or null`]);
  });

  it('accepts max_uses up to the largest a credential can record', () => {
    expect(normalizeDecision([{ result: { ...allow, max_uses: 2 ** 31 - 1 } }])).toMatchObject({ allow: true, max_uses: 2 ** 31 - 1 });
  });

  it('denies an allow carrying a field it does not know, such as a misspelt flag', () => {
    const typo = normalizeDecision([{ result: { ...allow, requires_aproval: true } }]);
    expect(typo).toMatchObject({ allow: false, requires_approval: false });
    expect(typo.reasons).toEqual(['malformed policy decision: unknown field requires_aproval']);
    const pending = normalizeDecision([{ result: { ...allow, requires_approval: true, max_usess: 1 } }]);
    expect(pending).toMatchObject({ allow: false, requires_approval: false });
  });

  it('ignores unknown fields on a plain deny', () => {
    expect(normalizeDecision([{ result: { allow: false, reasons: ['no'], note: 1 } }]).reasons).toEqual(['no']);
  });

  it('keeps only string reasons of a deny, with a fallback', () => {
    expect(normalizeDecision([{ result: { allow: false, reasons: ['a', 1, null, 'b'] } }]).reasons).toEqual(['a', 'b']);
    expect(normalizeDecision([{ result: { allow: false } }]).reasons).toEqual(['the policy did not allow the request']);
  });

  it('does not carry a deny’s caps', () => {
    expect(normalizeDecision([{ result: { allow: false, max_ttl_seconds: 900, max_uses: null } }])).toMatchObject({
      max_ttl_seconds: 0,
      max_uses: 0,
    });
  });

  it('never quarantines on an allow or a pending approval', () => {
    expect(normalizeDecision([{ result: { ...allow, quarantine: true } }])).toMatchObject({ allow: false, quarantine: true });
    expect(normalizeDecision([{ result: { ...allow, allow: false, requires_approval: true, quarantine: true } }])).toMatchObject({
      allow: false,
      requires_approval: false,
      quarantine: true,
    });
  });
});

describe('denyDecision', () => {
  it('always has a reason', () => {
    expect(denyDecision([]).reasons).toEqual(['denied by policy']);
  });
});
