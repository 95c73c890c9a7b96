import { InvalidAuthorizationDetailsError } from '../errors/oauth-errors';
import { findJsonInputProblem, JsonInputError, parseJsonInput } from '../json/json-input';
import { quoteToken, safeToken } from '../util/safe-description';
import { CONNECTOR_DETAIL_TYPE, CONNECTOR_ID_PATTERN, type ConnectorAuthorizationDetail, type ConstraintValue } from './authorization-details.types';

/** Options of {@link parseAuthorizationDetails}. */
export interface ParseAuthorizationDetailsOptions {
  /** Most entries in the array. Default 10. */
  readonly maxEntries?: number;
  /** Most characters of the JSON string form. Default 16 384. */
  readonly maxLength?: number;
}

const DEFAULT_MAX_ENTRIES = 10;
const DEFAULT_MAX_LENGTH = 16_384;
const MAX_ACTIONS = 64;
const MAX_CONSTRAINTS = 32;
const MAX_ARRAY_VALUES = 100;
const MAX_STRING_LENGTH = 1024;
const MAX_LOCATIONS = 10;
const MAX_LOCATION_LENGTH = 2048;
const ACTION_PATTERN = /^[\x21-\x7e]{1,128}$/;
const CONSTRAINT_NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
/** Names that mean something to JavaScript objects or Rego input handling; never constraint names. */
const RESERVED_NAMES = new Set(['__proto__', 'constructor', 'prototype']);
const MEMBERS = new Set(['type', 'connector', 'actions', 'constraints', 'locations']);

function invalid(description: string): InvalidAuthorizationDetailsError {
  return new InvalidAuthorizationDetailsError(description, { reason: 'authorization_details_syntax' });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

function isJsonNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/** One problem of an `authorization_details` value: the member's path and the full description. */
export interface AuthorizationDetailsProblem {
  /** The member at fault, e.g. `authorization_details[1].constraints.amount_max` (printable, bounded). */
  readonly path: string;
  /** What is wrong, starting with the path, e.g. `authorization_details[1].actions must be a non-empty array`. */
  readonly description: string;
}

/** Collects problems up to a bound; once full, further ones are dropped (the first ones are kept). */
class Problems {
  readonly list: AuthorizationDetailsProblem[] = [];
  constructor(private readonly max: number) {}
  add(path: string, description: string): undefined {
    if (this.list.length < this.max) this.list.push({ path, description });
    return undefined;
  }
  /** Adds `path` + ` ` + `problem`. */
  at(path: string, problem: string): undefined {
    return this.add(path, `${path} ${problem}`);
  }
}

function parseConstraintValue(value: unknown, path: string, problems: Problems): ConstraintValue | undefined {
  if (typeof value === 'string') {
    if (value.length > MAX_STRING_LENGTH) return problems.at(path, `is longer than ${MAX_STRING_LENGTH} characters`);
    return value;
  }
  if (typeof value === 'boolean' || isJsonNumber(value)) return value;
  if (Array.isArray(value)) {
    if (value.length > MAX_ARRAY_VALUES) return problems.at(path, `has more than ${MAX_ARRAY_VALUES} values`);
    const index = value.findIndex((element) => !isJsonNumber(element) && !(typeof element === 'string' && element.length <= MAX_STRING_LENGTH));
    if (index >= 0) return problems.at(`${path}[${index}]`, 'must be a string or a number');
    return value as Array<string | number>;
  }
  return problems.at(path, 'must be a string, a number, a boolean or an array of strings and numbers');
}

/** The entry normalised, or `undefined` with its problems added (each member checked on its own). */
function parseEntry(raw: unknown, path: string, problems: Problems): ConnectorAuthorizationDetail | undefined {
  const before = problems.list.length;
  if (!isPlainObject(raw)) return problems.at(path, 'must be a JSON object');
  const { type } = raw;
  // The type says what the other members mean: without the right one, nothing else is checked.
  if (typeof type !== 'string') return problems.at(`${path}.type`, 'is required');
  if (type !== CONNECTOR_DETAIL_TYPE) return problems.add(`${path}.type`, `unknown authorization_details type ${quoteToken(type)}`);
  for (const member of Object.keys(raw)) {
    if (!MEMBERS.has(member)) problems.add(`${path}.${safeToken(member)}`, `${path}.${quoteToken(member)} is not supported`);
  }

  const { connector, actions, constraints, locations } = raw;
  if (typeof connector !== 'string' || !CONNECTOR_ID_PATTERN.test(connector)) {
    problems.at(`${path}.connector`, `must be a connector identifier (${CONNECTOR_ID_PATTERN.source})`);
  }

  const normalisedActions: string[] = [];
  if (!Array.isArray(actions) || actions.length === 0) problems.at(`${path}.actions`, 'must be a non-empty array');
  else if (actions.length > MAX_ACTIONS) problems.at(`${path}.actions`, `has more than ${MAX_ACTIONS} entries`);
  else {
    actions.forEach((action: unknown, index) => {
      if (typeof action !== 'string' || !ACTION_PATTERN.test(action)) {
        problems.at(`${path}.actions[${index}]`, 'must be a non-empty operation name');
      } else if (normalisedActions.includes(action)) {
        problems.at(`${path}.actions[${index}]`, `repeats ${quoteToken(action)}`);
      } else normalisedActions.push(action);
    });
  }

  let normalisedConstraints: Array<[string, ConstraintValue]> = [];
  if (constraints !== undefined) {
    if (!isPlainObject(constraints)) problems.at(`${path}.constraints`, 'must be a JSON object');
    else {
      const entries = Object.entries(constraints);
      if (entries.length > MAX_CONSTRAINTS) problems.at(`${path}.constraints`, `has more than ${MAX_CONSTRAINTS} entries`);
      else {
        normalisedConstraints = entries.flatMap(([name, value]): Array<[string, ConstraintValue]> => {
          if (!CONSTRAINT_NAME_PATTERN.test(name) || RESERVED_NAMES.has(name)) {
            problems.add(`${path}.constraints.${safeToken(name)}`, `${path}.constraints has an invalid name ${quoteToken(name)}`);
            return [];
          }
          const parsed = parseConstraintValue(value, `${path}.constraints.${name}`, problems);
          return parsed === undefined ? [] : [[name, parsed]];
        });
      }
    }
  }

  let normalisedLocations: string[] = [];
  if (locations !== undefined) {
    if (!Array.isArray(locations)) problems.at(`${path}.locations`, 'must be an array of strings');
    else if (locations.length > MAX_LOCATIONS) problems.at(`${path}.locations`, `has more than ${MAX_LOCATIONS} entries`);
    else {
      locations.forEach((location: unknown, index) => {
        if (typeof location !== 'string' || location === '' || location.length > MAX_LOCATION_LENGTH) {
          problems.at(`${path}.locations[${index}]`, 'must be a non-empty string');
        }
      });
      normalisedLocations = locations as string[];
    }
  }
  if (problems.list.length > before || typeof connector !== 'string') return undefined;

  const detail: ConnectorAuthorizationDetail = { type: CONNECTOR_DETAIL_TYPE, connector, actions: normalisedActions };
  // fromEntries defines own data properties: a "__proto__" key could never reach the prototype.
  if (normalisedConstraints.length > 0) detail.constraints = Object.fromEntries(normalisedConstraints);
  if (normalisedLocations.length > 0) detail.locations = [...normalisedLocations];
  return detail;
}

/** Options of {@link checkAuthorizationDetails}. */
export interface CheckAuthorizationDetailsOptions extends ParseAuthorizationDetailsOptions {
  /** Most problems reported. Default 1 (the first problem only). */
  readonly maxProblems?: number;
}

/**
 * Checks RFC 9396 `authorization_details` as {@link parseAuthorizationDetails} does, but
 * reports up to `maxProblems` problems (in document order: every member of every entry is
 * checked on its own; an entry without the `connector` type is one problem) instead of the
 * first. Returns the normalised entries, or the problems. A value that is not JSON, not an
 * array, empty or too long is one problem: nothing else can be checked.
 */
export function checkAuthorizationDetails(
  raw: unknown,
  options: CheckAuthorizationDetailsOptions = {},
): { details: ConnectorAuthorizationDetail[]; problems: [] } | { details: undefined; problems: AuthorizationDetailsProblem[] } {
  const maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
  const maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  const problems = new Problems(Math.max(1, options.maxProblems ?? 1));
  const refused = () => ({ details: undefined, problems: problems.list });
  const root = 'authorization_details';
  let value = raw;
  const strict = { root, forbidNul: true, maxProblems: Math.max(1, options.maxProblems ?? 1) } as const;
  if (typeof raw === 'string') {
    if (raw.length > maxLength) {
      problems.at(root, `is longer than ${maxLength} characters`);
      return refused();
    }
    try {
      value = parseJsonInput(raw, strict);
    } catch (error) {
      if (!(error instanceof JsonInputError) || error.reason === 'syntax') problems.at(root, 'is not valid JSON');
      else for (const problem of error.problems) problems.add(problem.path || root, problem.message);
      return refused();
    }
  } else {
    // Already parsed by someone else: the same refusals, so no member was lost on the way.
    const problem = findJsonInputProblem(raw, strict);
    if (problem) {
      problems.add(problem.path || root, problem.message);
      return refused();
    }
  }
  if (!Array.isArray(value)) problems.at(root, 'must be a JSON array');
  else if (value.length === 0) problems.at(root, 'must not be empty');
  else if (value.length > maxEntries) problems.at(root, `has more than ${maxEntries} entries`);
  if (problems.list.length > 0) return refused();
  const details = (value as unknown[]).map((entry, index) => parseEntry(entry, `${root}[${index}]`, problems));
  if (problems.list.length > 0) return refused();
  return { details: details as ConnectorAuthorizationDetail[], problems: [] };
}

/**
 * Parses RFC 9396 `authorization_details`: the JSON string of a form parameter, or an
 * already-parsed value (a Tasks API body's `allowed`). It must be a non-empty array of at
 * most `maxEntries` `connector` entries with exactly the members
 * `type`, `connector`, `actions`, optional `constraints` (flat: string, finite number,
 * boolean or array of strings/numbers) and optional `locations` (strings). Returns fresh,
 * normalised copies (empty `constraints`/`locations` dropped); anything else is an
 * `invalid_authorization_details` naming the first problem. The JSON is read strictly
 * (see `parseJsonInput`): duplicate keys, `__proto__`/`constructor`/`prototype` keys, lone
 * surrogates, NUL characters and deep nesting are refused with the member's path.
 */
export function parseAuthorizationDetails(raw: unknown, options: ParseAuthorizationDetailsOptions = {}): ConnectorAuthorizationDetail[] {
  const checked = checkAuthorizationDetails(raw, options);
  if (checked.details === undefined) throw invalid(checked.problems[0].description);
  return checked.details;
}
