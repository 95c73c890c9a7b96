/**
 * A policy decision after {@link normalizeDecision}: every field present and well typed.
 * `allow` is true only when a credential may be issued now.
 */
export interface Decision {
  allow: boolean;
  /** Human-readable, for the audit trail and the client's `error_description`. Never empty. */
  reasons: string[];
  /** Cap on the credential's lifetime: a positive integer when `allow` or `requires_approval`, else 0. */
  max_ttl_seconds: number;
  /** Cap on uses, enforced by the gateway: a positive integer, or null for unlimited; 0 on a plain deny. */
  max_uses: number | null;
  /** The request is refused now but would be allowed once a human approves it (`allow` is then false). */
  requires_approval: boolean;
  /** The task must be quarantined (its credentials revoked). Only ever with `allow` false. */
  quarantine: boolean;
  /** The request was outside the task's declared purpose; the server counts it. */
  out_of_purpose: boolean;
}

/** The fail-closed deny used whenever a result cannot be trusted. */
export function denyDecision(reasons: string[], flags: Partial<Pick<Decision, 'quarantine' | 'out_of_purpose'>> = {}): Decision {
  return {
    allow: false,
    reasons: reasons.length > 0 ? reasons : ['denied by policy'],
    max_ttl_seconds: 0,
    max_uses: 0,
    requires_approval: false,
    quarantine: flags.quarantine === true,
    out_of_purpose: flags.out_of_purpose === true,
  };
}

/**
 * Turns the raw OPA result set of the entrypoint into a {@link Decision}, failing closed:
 * an empty set (undefined decision), several results, a non-object, `allow !== true` or any
 * malformed field gives a deny whose reasons say why. Never throws.
 *
 * - `allow: true` needs `max_ttl_seconds` a number >= 1 (floored), `max_uses` a positive
 *   integer up to {@link MAX_USES_LIMIT} or null, `reasons` absent or an array of strings,
 *   the flags absent or booleans, and no other field (a misspelt `requires_approval` must
 *   not pass as an allow); with `quarantine: true` it is contradictory and denied.
 * - `requires_approval: true` means "allowed once a human approves": the result has `allow`
 *   false (also when the policy said `allow: true` with it); it needs the same well-formed
 *   caps as an allow, or it degrades to a plain deny.
 * - `quarantine` and `out_of_purpose` are kept on a deny when they are `true`; anything but
 *   `true` is false.
 */
export function normalizeDecision(resultSet: unknown): Decision {
  if (!Array.isArray(resultSet) || resultSet.length === 0) {
    return denyDecision(['the policy returned no decision']);
  }
  if (resultSet.length > 1) return denyDecision(['the policy returned more than one decision']);
  const entry: unknown = resultSet[0];
  const raw = isObject(entry) ? entry.result : undefined;
  if (!isObject(raw)) return denyDecision(['the policy decision is not an object']);

  const flags = {
    quarantine: raw.quarantine === true,
    out_of_purpose: raw.out_of_purpose === true,
  };
  const policyReasons = Array.isArray(raw.reasons) ? raw.reasons.filter((r): r is string => typeof r === 'string') : [];
  const allow = raw.allow === true;
  const approval = raw.requires_approval === true;

  if (!allow && !approval) {
    return denyDecision(policyReasons.length > 0 ? policyReasons : ['the policy did not allow the request'], flags);
  }
  // From here the policy would let a credential out, now or after approval: every field must hold.
  const problems = malformed(raw);
  if (flags.quarantine) problems.push(`the policy both ${allow ? 'allowed' : 'sent for approval'} the request and quarantined the task`);
  if (problems.length > 0) {
    // An allow's own reasons ("within purpose") would mislead next to a refusal: drop them.
    const kept = allow ? [] : policyReasons;
    return denyDecision([...kept, ...problems.map((problem) => `malformed policy decision: ${problem}`)], flags);
  }
  return {
    allow: !approval,
    reasons: policyReasons.length > 0 ? policyReasons : [approval ? 'the request requires approval' : 'allowed by policy'],
    max_ttl_seconds: Math.floor(raw.max_ttl_seconds as number),
    max_uses: raw.max_uses as number | null,
    requires_approval: approval,
    quarantine: false,
    out_of_purpose: flags.out_of_purpose,
  };
}

/**
 * The largest `max_uses` a credential can record (its column is a PostgreSQL `integer`): a
 * larger one would fail the issuing statement, answered as if the agent's request were at fault.
 */
export const MAX_USES_LIMIT = 2_147_483_647;

/** The fields a decision may hold; on an allow, any other (a misspelt flag) is a deny. */
const DECISION_FIELDS = new Set(['allow', 'reasons', 'max_ttl_seconds', 'max_uses', 'requires_approval', 'quarantine', 'out_of_purpose']);

/** What is wrong with a decision that would allow (or await approval). */
function malformed(raw: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const ttl = raw.max_ttl_seconds;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 1) problems.push('max_ttl_seconds must be a number of at least 1');
  const uses = raw.max_uses;
  if (uses !== null && !(typeof uses === 'number' && Number.isInteger(uses) && uses >= 1 && uses <= MAX_USES_LIMIT)) {
    problems.push(`max_uses must be a positive integer up to ${MAX_USES_LIMIT}, or null`);
  }
  // `requires_aproval: true` next to `allow: true` must not issue a credential without approval.
  for (const key of Object.keys(raw)) if (!DECISION_FIELDS.has(key)) problems.push(`unknown field ${key}`);
  if (raw.reasons !== undefined && !(Array.isArray(raw.reasons) && raw.reasons.every((r) => typeof r === 'string'))) {
    problems.push('reasons must be an array of strings');
  }
  for (const flag of ['allow', 'requires_approval', 'quarantine', 'out_of_purpose'] as const) {
    if (raw[flag] !== undefined && typeof raw[flag] !== 'boolean') problems.push(`${flag} must be a boolean`);
  }
  return problems;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
