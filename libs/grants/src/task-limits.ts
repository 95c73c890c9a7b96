import type { ConnectorDetail, ConnectorOperation } from '@writ/database';
import { jsonPath, safeToken } from '@writ/oauth';

/**
 * The `limits` of one `allowed` entry of a task: `calls` caps the forwarded gateway calls of
 * every credential the entry covers, `sum` caps the running total of the request field bound
 * to each named constraint (e.g. `amount_max` binds body field `amount`).
 */
export interface TaskLimits {
  calls?: number;
  sum?: Record<string, number>;
}

/** An `allowed` entry as a task stores it: an `authorization_details` entry and its limits. */
export type DeclaredEntry = ConnectorDetail & { limits?: TaskLimits };

/** A problem with a declaration, naming the offending field (e.g. `allowed[0].limits.calls`). */
export interface LimitsProblem {
  field: string;
  message: string;
}

/** Largest `calls` limit (fits the budget table and any counter). */
export const MAX_CALLS_LIMIT = 1_000_000_000;
/** Largest `sum` limit: past 2^53 JSON numbers stop being exact. */
export const MAX_SUM_LIMIT = Number.MAX_SAFE_INTEGER;

const LIMIT_KEYS = new Set(['calls', 'sum']);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

/**
 * Validates the `limits` an entry declares, against the entry and the operations its actions
 * name (`operations`, in the order of `entry.actions`; an unknown action is `undefined` and
 * reported elsewhere). `calls` must be a positive integer; each `sum` name must be a
 * constraint the entry declares, bound by every action with operator `lte` (so the gateway
 * reads a number no higher than the grant); each `sum` value a positive finite number.
 * Unknown keys, empty objects and wrong types are refused. Returns the problems, or the
 * normalised limits when there are none.
 */
export function validateTaskLimits(
  raw: unknown,
  path: string,
  entry: ConnectorDetail,
  operations: Array<ConnectorOperation | undefined>,
): { limits?: TaskLimits; problems: LimitsProblem[] } {
  const problems: LimitsProblem[] = [];
  if (!isPlainObject(raw)) return { problems: [{ field: path, message: 'must be an object with calls and/or sum' }] };
  for (const key of Object.keys(raw)) {
    // The key is the caller's text: shown printable and short (jsonPath), never as sent.
    if (!LIMIT_KEYS.has(key)) problems.push({ field: jsonPath(path, key), message: 'is not a known limit (calls, sum)' });
  }
  if (raw.calls === undefined && raw.sum === undefined) problems.push({ field: path, message: 'must declare calls or sum' });
  const limits: TaskLimits = {};
  if (raw.calls !== undefined) {
    const calls = raw.calls;
    if (typeof calls !== 'number' || !Number.isInteger(calls) || calls < 1 || calls > MAX_CALLS_LIMIT) {
      problems.push({ field: `${path}.calls`, message: `must be a positive integer (at most ${MAX_CALLS_LIMIT})` });
    } else {
      limits.calls = calls;
    }
  }
  if (raw.sum !== undefined) {
    const sum = raw.sum;
    if (!isPlainObject(sum) || Object.keys(sum).length === 0) {
      problems.push({ field: `${path}.sum`, message: 'must be an object naming at least one constraint' });
    } else {
      const sums: Record<string, number> = {};
      for (const [name, value] of Object.entries(sum)) {
        const field = jsonPath(`${path}.sum`, name);
        if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_SUM_LIMIT) {
          problems.push({ field, message: 'must be a positive number' });
          continue;
        }
        if (!entry.constraints || !Object.hasOwn(entry.constraints, name)) {
          problems.push({ field, message: `must name a constraint this entry declares (declare constraints.${safeToken(name)})` });
          continue;
        }
        const notLte = entry.actions.filter((_, index) => {
          const operation = operations[index];
          return operation !== undefined && operation.constraints?.[name]?.op !== 'lte';
        });
        if (notLte.length > 0) {
          problems.push({ field, message: `constraint ${name} must be bound with operator lte by every action (not by ${notLte.join(', ')})` });
          continue;
        }
        sums[name] = value;
      }
      limits.sum = Object.fromEntries(Object.entries(sums));
    }
  }
  return problems.length > 0 ? { problems } : { limits, problems };
}

/** One budget row: the rule (`calls` or `sum:<constraint>`) and its maximum. */
export interface BudgetRule {
  entry: number;
  rule: string;
  maximum: number;
}

/** The budget rows a task's declaration needs (none for entries without limits). */
export function budgetRules(allowed: DeclaredEntry[]): BudgetRule[] {
  const rules: BudgetRule[] = [];
  allowed.forEach((entry, index) => {
    if (!entry.limits) return;
    if (entry.limits.calls !== undefined) rules.push({ entry: index, rule: 'calls', maximum: entry.limits.calls });
    for (const [name, maximum] of Object.entries(entry.limits.sum ?? {})) rules.push({ entry: index, rule: `sum:${name}`, maximum });
  });
  return rules;
}

/**
 * The actions a task's declaration allows on one connector (each once, in declaration order):
 * what an MCP client of the task may see in `tools/list`.
 */
export function declaredActions(allowed: DeclaredEntry[], connectorId: string): string[] {
  const actions = new Set<string>();
  for (const entry of allowed) {
    if (entry?.connector !== connectorId || !Array.isArray(entry.actions)) continue;
    for (const action of entry.actions) if (typeof action === 'string') actions.add(action);
  }
  return [...actions];
}

/** The gateway's refusal rule for a budget rule: `limit:calls` or `limit:sum:<constraint>`. */
export function limitRuleName(rule: string): string {
  return `limit:${rule}`;
}
