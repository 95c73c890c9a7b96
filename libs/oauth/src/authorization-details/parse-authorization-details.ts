import { InvalidAuthorizationDetailsError } from '../errors/oauth-errors';
import { findJsonInputProblem, JsonInputError, parseJsonInput } from '../json/json-input';
import { quoteToken } from '../util/safe-description';
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

function parseConstraintValue(value: unknown, path: string): ConstraintValue {
  if (typeof value === 'string') {
    if (value.length > MAX_STRING_LENGTH) throw invalid(`${path} is longer than ${MAX_STRING_LENGTH} characters`);
    return value;
  }
  if (typeof value === 'boolean' || isJsonNumber(value)) return value;
  if (Array.isArray(value)) {
    if (value.length > MAX_ARRAY_VALUES) throw invalid(`${path} has more than ${MAX_ARRAY_VALUES} values`);
    return value.map((element, index) => {
      if (isJsonNumber(element)) return element;
      if (typeof element === 'string' && element.length <= MAX_STRING_LENGTH) return element;
      throw invalid(`${path}[${index}] must be a string or a number`);
    });
  }
  throw invalid(`${path} must be a string, a number, a boolean or an array of strings and numbers`);
}

function parseEntry(raw: unknown, path: string): ConnectorAuthorizationDetail {
  if (!isPlainObject(raw)) throw invalid(`${path} must be a JSON object`);
  const { type } = raw;
  if (typeof type !== 'string') throw invalid(`${path}.type is required`);
  if (type !== CONNECTOR_DETAIL_TYPE) throw invalid(`unknown authorization_details type ${quoteToken(type)}`);
  for (const member of Object.keys(raw)) {
    if (!MEMBERS.has(member)) throw invalid(`${path}.${quoteToken(member)} is not supported`);
  }

  const { connector, actions, constraints, locations } = raw;
  if (typeof connector !== 'string' || !CONNECTOR_ID_PATTERN.test(connector)) {
    throw invalid(`${path}.connector must be a connector identifier (${CONNECTOR_ID_PATTERN.source})`);
  }

  if (!Array.isArray(actions) || actions.length === 0) throw invalid(`${path}.actions must be a non-empty array`);
  if (actions.length > MAX_ACTIONS) throw invalid(`${path}.actions has more than ${MAX_ACTIONS} entries`);
  const seen = new Set<string>();
  const normalisedActions = actions.map((action: unknown, index) => {
    if (typeof action !== 'string' || !ACTION_PATTERN.test(action)) {
      throw invalid(`${path}.actions[${index}] must be a non-empty operation name`);
    }
    if (seen.has(action)) throw invalid(`${path}.actions[${index}] repeats ${quoteToken(action)}`);
    seen.add(action);
    return action;
  });

  const detail: ConnectorAuthorizationDetail = { type: CONNECTOR_DETAIL_TYPE, connector, actions: normalisedActions };

  if (constraints !== undefined) {
    if (!isPlainObject(constraints)) throw invalid(`${path}.constraints must be a JSON object`);
    const entries = Object.entries(constraints);
    if (entries.length > MAX_CONSTRAINTS) throw invalid(`${path}.constraints has more than ${MAX_CONSTRAINTS} entries`);
    const normalised: Array<[string, ConstraintValue]> = entries.map(([name, value]) => {
      if (!CONSTRAINT_NAME_PATTERN.test(name) || RESERVED_NAMES.has(name)) {
        throw invalid(`${path}.constraints has an invalid name ${quoteToken(name)}`);
      }
      return [name, parseConstraintValue(value, `${path}.constraints.${name}`)];
    });
    // fromEntries defines own data properties: a "__proto__" key could never reach the prototype.
    if (normalised.length > 0) detail.constraints = Object.fromEntries(normalised);
  }

  if (locations !== undefined) {
    if (!Array.isArray(locations)) throw invalid(`${path}.locations must be an array of strings`);
    if (locations.length > MAX_LOCATIONS) throw invalid(`${path}.locations has more than ${MAX_LOCATIONS} entries`);
    const normalised = locations.map((location: unknown, index) => {
      if (typeof location !== 'string' || location === '' || location.length > MAX_LOCATION_LENGTH) {
        throw invalid(`${path}.locations[${index}] must be a non-empty string`);
      }
      return location;
    });
    if (normalised.length > 0) detail.locations = normalised;
  }
  return detail;
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
  const maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
  const maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  let value = raw;
  const strict = { root: 'authorization_details', forbidNul: true } as const;
  if (typeof raw === 'string') {
    if (raw.length > maxLength) throw invalid(`authorization_details is longer than ${maxLength} characters`);
    try {
      value = parseJsonInput(raw, strict);
    } catch (error) {
      if (error instanceof JsonInputError && error.reason !== 'syntax') throw invalid(error.message);
      throw invalid('authorization_details is not valid JSON');
    }
  } else {
    // Already parsed by someone else: the same refusals, so no member was lost on the way.
    const problem = findJsonInputProblem(raw, strict);
    if (problem) throw invalid(problem.message);
  }
  if (!Array.isArray(value)) throw invalid('authorization_details must be a JSON array');
  if (value.length === 0) throw invalid('authorization_details must not be empty');
  if (value.length > maxEntries) throw invalid(`authorization_details has more than ${maxEntries} entries`);
  return value.map((entry: unknown, index) => parseEntry(entry, `authorization_details[${index}]`));
}
