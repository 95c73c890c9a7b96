import type { ConnectorOperation, ConstraintBinding } from '@writ/database';
import { matchConstraint, quoteToken } from '@writ/oauth';
import { inexactNumberProblem, looksNumeric, rawArrayElements, rawValueAt } from './exact-number';
import { foldCase, sameParameterName } from '@writ/connectors';

/** The parts of a request that constraints read, as it will be forwarded. */
export interface ConstrainedRequest {
  /** Decoded path parameters of the matched template. */
  pathParams: Record<string, string>;
  /** The raw query string (without `?`). */
  query: string;
  /** The parsed JSON body, or `undefined` when the request has none. */
  body: unknown;
  /** The body's text as it will be forwarded (to read numbers as written), when there is a parsed body. */
  bodyText?: string;
  /** The names of the body's top-level members as a framework would read them into its parameters (see `bodyMemberNames`). */
  bodyNames?: readonly string[];
  /** The request's headers as received, name and value alternating (Node's `rawHeaders`): what `header` constraints read. */
  rawHeaders?: readonly string[];
}

/** One constraint as checked (values go to the audit event). */
export interface CheckedConstraint {
  name: string;
  in: ConstraintBinding['in'];
  op: ConstraintBinding['op'];
  granted: unknown;
  actual: unknown;
  ok: boolean;
}

/** The outcome of checking a request against a grant's constraints. */
export interface ConstraintCheck {
  checked: CheckedConstraint[];
  /** The first failed rule, `constraint:<name>`, and why (`403`); `reason` for the audit event when the request is ambiguous. */
  failure?: { rule: string; description: string; reason?: string };
  /** A constrained value the gateway cannot compare exactly as the upstream will read it (`400` naming the field). */
  invalid?: { field: string; description: string };
  /**
   * The value of each header a `header` constraint checked, by its catalogue name: the upstream
   * gets exactly these, and no other spelling of those headers.
   */
  headers?: Record<string, string>;
}

const MISSING = Symbol('missing');
const AMBIGUOUS = Symbol('ambiguous');

function bodyField(body: unknown, field: string): unknown {
  let current: unknown = body;
  for (const key of field.split('.')) {
    if (current === null || typeof current !== 'object' || Array.isArray(current) || !Object.hasOwn(current, key)) return MISSING;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/**
 * A member that holds a dotted body field under its dotted name, if any (as `"b.c" of a`): for
 * `recipient.account`, a top-level `"recipient.account"` beside `{"recipient":{"account":…}}`
 * (also in another case).
 * Laravel's `$request->input('a.b')` (`Arr::get`) and lodash's `_.get(body, 'a.b')` read such a
 * literal key before the nested path, so the upstream could act on the value the gateway did
 * not check.
 */
function dottedAlias(body: unknown, field: string): string | undefined {
  const parts = field.split('.');
  let current: unknown = body;
  for (let depth = 0; depth < parts.length - 1; depth += 1) {
    if (current === null || typeof current !== 'object' || Array.isArray(current)) return undefined;
    const aliases = new Set<string>();
    for (let end = depth + 2; end <= parts.length; end += 1) aliases.add(foldCase(parts.slice(depth, end).join('.')));
    const alias = Object.keys(current).find((key) => key.includes('.') && aliases.has(foldCase(key)));
    if (alias !== undefined) return depth === 0 ? quoteToken(alias) : `${quoteToken(alias)} of ${parts.slice(0, depth).join('.')}`;
    current = Object.hasOwn(current, parts[depth]) ? (current as Record<string, unknown>)[parts[depth]] : undefined;
  }
  return undefined;
}

/**
 * The one value of query parameter `field`. Repeated, or present also under a name a lenient
 * framework reads as the same (`FIELD`, ` field`, `field[]`, PHP's `field%00x`, see {@link sameParameterName}):
 * ambiguous, as the upstream may read another value than the one checked.
 */
function queryField(query: string, field: string): string | typeof MISSING | typeof AMBIGUOUS {
  const values: string[] = [];
  for (const [name, value] of new URLSearchParams(query)) {
    if (name === field) values.push(value);
    else if (sameParameterName(name, field)) return AMBIGUOUS;
  }
  if (values.length === 0) return MISSING;
  if (values.length > 1) return AMBIGUOUS;
  return values[0];
}

/** A header name as compared: lower case, `_` read as `-` (Rack and CGI servers read `Stripe_Account` as `Stripe-Account`). */
function headerKey(name: string): string {
  return name.toLowerCase().replace(/_/g, '-');
}

/**
 * The one value of header `field` in `raw` (name and value alternating), compared as
 * {@link headerKey} reads names. Sent twice, in two cases or spellings, or with a comma (a
 * list in one line, which RFC 9110 section 5.3 makes the same as repeating it): ambiguous, as
 * the upstream may read another value than the one checked. Named by a `Connection` header: a
 * proxy drops it, so the upstream would act under its default authority instead.
 */
function headerField(raw: readonly string[], field: string): string | typeof MISSING | { ambiguous: string } {
  const key = headerKey(field);
  const values: string[] = [];
  for (let index = 0; index + 1 < raw.length; index += 2) {
    const name = headerKey(raw[index]);
    if (name === key) values.push(raw[index + 1]);
    else if (name === 'connection' && raw[index + 1].split(',').some((listed) => headerKey(listed.trim()) === key)) {
      return { ambiguous: `the Connection header names header ${field}, which a proxy would drop` };
    }
  }
  if (values.length === 0) return MISSING;
  if (values.length > 1) return { ambiguous: `header ${field} is sent more than once (also in another case, or with _ for -)` };
  if (values[0].includes(',')) return { ambiguous: `header ${field} carries a list (a comma)` };
  return values[0];
}

/**
 * The most `&`-separated parts a query with a checked parameter may have. Express (`qs` and
 * `node:querystring`), PHP (`max_input_vars`) and Tomcat (`maxParameterCount`) read at most
 * 1000 parameters by default and silently drop the rest: a checked `repo=allowed` sent after
 * 1000 others would not reach them, and a route may read a missing filter as "all".
 */
export const MAX_QUERY_PARAMETERS = 1000;

type Binding = NonNullable<ConnectorOperation['constraints']>[string];

/**
 * Where else than its binding a constrained name is sent, if anywhere (names compared as
 * {@link sameParameterName} reads them): a body field's top-level name, a query parameter's
 * name or a path parameter's name found in another of the path, the query and the top-level
 * body members. Rails, Laravel, Flask and Rack merge the query and the body into one set of
 * parameters, one overriding the other; Rails, Sinatra and Spring's data binding merge the
 * path's parameters into that set too (and some let the query or the body win), so the upstream
 * could act on the value the gateway did not check.
 */
function otherLocation(binding: Binding, request: ConstrainedRequest): 'path' | 'query' | 'body' | undefined {
  // A header is not a parameter: frameworks do not merge headers with the path, query or body.
  if (binding.in === 'header') return undefined;
  const name = binding.in === 'body' ? binding.field.split('.')[0] : binding.field;
  const same = (key: string) => sameParameterName(key, name);
  // A path-bound name also under another parameter of the template read as the same (`{Repo}` and `{repo}`).
  if (Object.keys(request.pathParams).some((key) => (binding.in !== 'path' || key !== binding.field) && same(key))) return 'path';
  if (binding.in !== 'query') {
    for (const key of new URLSearchParams(request.query).keys()) if (same(key)) return 'query';
  }
  if (binding.in !== 'body' && (request.bodyNames ?? []).some(same)) return 'body';
  return undefined;
}

function isBounded(binding: Binding | undefined): boolean {
  return binding !== undefined && (binding.min !== undefined || binding.max !== undefined);
}

/** Why a number read from the request is not exactly what the upstream will read, if it is not. */
function numberProblem(binding: Binding, actual: unknown, request: ConstrainedRequest, text: string | undefined): string | undefined {
  if (binding.in !== 'body') return text !== undefined && looksNumeric(text) ? inexactNumberProblem(text) : undefined;
  const numeric = Array.isArray(actual) ? actual.some((element) => typeof element === 'number') : typeof actual === 'number';
  if (!numeric || request.bodyText === undefined) return undefined;
  const raw = rawValueAt(request.bodyText, binding.field.split('.'));
  if (raw === undefined) return 'could not be read as written';
  const tokens = Array.isArray(actual) ? rawArrayElements(raw).filter((token) => /^[-0-9]/.test(token)) : [raw];
  for (const token of tokens) {
    const problem = inexactNumberProblem(token);
    if (problem) return problem;
  }
  return undefined;
}

/** Path and query text read as a number when the grant or a catalogue bound compares numbers; otherwise as it is. */
function typedText(numeric: boolean, granted: unknown, text: string): unknown {
  const sample: unknown = Array.isArray(granted) ? granted[0] : granted;
  if (numeric || typeof sample === 'number') return looksNumeric(text) && inexactNumberProblem(text) === undefined ? Number(text) : text;
  if (typeof sample === 'boolean') return text === 'true' ? true : text === 'false' ? false : text;
  return text;
}

function withinBounds(binding: Binding, actual: unknown): boolean {
  const values = Array.isArray(actual) ? actual : [actual];
  return values.every(
    (value) =>
      typeof value === 'number' &&
      Number.isFinite(value) &&
      (binding.min === undefined || value >= binding.min) &&
      (binding.max === undefined || value <= binding.max),
  );
}

/**
 * Checks every constraint of the grant, and every catalogue bound (`min`/`max`) of the
 * operation whatever the grant says, against the request as it will be forwarded. A
 * constraint the operation does not bind, a missing or repeated field, a field sent in two of
 * the path, the query and the body, a type mismatch, a
 * value outside the grant or outside the catalogue's bounds fails, naming the rule. A number
 * whose text does not denote exactly the value compared (precision beyond a double, beyond
 * 2^53, exponent notation, `-0`) is `invalid`. Nothing is coerced beyond reading path,
 * query and header text as the granted type (plain decimals only). A `header` binding reads
 * `rawHeaders` (see {@link headerField}); one the grant gives no value requires the header
 * absent. The headers checked come back in `headers`, to be forwarded exactly so.
 */
export function checkConstraints(operation: ConnectorOperation, granted: Record<string, unknown> | undefined, request: ConstrainedRequest): ConstraintCheck {
  const checked: CheckedConstraint[] = [];
  const grantedNames = Object.keys(granted ?? {});
  // A header binding the grant does not give a value is checked too: the header must then be
  // absent, and the call runs under the upstream credential's own authority (see {@link headerField}).
  const boundedNames = Object.keys(operation.constraints ?? {}).filter(
    (name) => !grantedNames.includes(name) && (isBounded(operation.constraints[name]) || operation.constraints[name].in === 'header'),
  );
  const headers: Record<string, string> = {};
  for (const name of [...grantedNames, ...boundedNames]) {
    const inGrant = grantedNames.includes(name);
    const grantedValue = inGrant ? granted![name] : undefined;
    const binding = Object.hasOwn(operation.constraints ?? {}, name) ? operation.constraints[name] : undefined;
    if (!binding) {
      return { checked, failure: { rule: `constraint:${name}`, description: `constraint ${name} is not bound by operation ${operation.name}` } };
    }
    const elsewhere = otherLocation(binding, request);
    if (elsewhere) {
      return {
        checked,
        failure: {
          rule: `constraint:${name}`,
          description: `${binding.in} field ${binding.field} is also sent in the ${elsewhere} (some upstreams merge path, query and body parameters)`,
          reason: 'field_in_two_places',
        },
      };
    }
    const bounded = isBounded(binding);
    let actual: unknown;
    let text: string | undefined;
    if (binding.in === 'path') {
      text = Object.hasOwn(request.pathParams, binding.field) ? request.pathParams[binding.field] : undefined;
      actual = text === undefined ? MISSING : typedText(bounded, grantedValue, text);
    } else if (binding.in === 'query') {
      // Counted as split on `&`, empty parts included, as qs counts them towards its limit.
      if (request.query.split('&').length > MAX_QUERY_PARAMETERS) {
        return {
          checked,
          failure: {
            rule: `constraint:${name}`,
            description: `the query has more than ${MAX_QUERY_PARAMETERS} parameters (some upstreams drop those past their limit, query parameter ${binding.field} among them)`,
            reason: 'too_many_parameters',
          },
        };
      }
      const raw = queryField(request.query, binding.field);
      if (raw === AMBIGUOUS) {
        return {
          checked,
          failure: {
            rule: `constraint:${name}`,
            description: `query parameter ${binding.field} is repeated (also as a name some upstreams read as the same, ignoring case, [] or leading spaces)`,
            reason: 'ambiguous_parameter',
          },
        };
      }
      text = raw === MISSING ? undefined : raw;
      actual = raw === MISSING ? MISSING : typedText(bounded, grantedValue, raw);
    } else if (binding.in === 'header') {
      const raw = headerField(request.rawHeaders ?? [], binding.field);
      if (typeof raw === 'object') {
        return { checked, failure: { rule: `constraint:${name}`, description: raw.ambiguous, reason: 'ambiguous_header' } };
      }
      if (raw !== MISSING && !inGrant && !bounded) {
        return {
          checked,
          failure: {
            rule: `constraint:${name}`,
            description: `header ${binding.field} is bound by constraint ${name}, which this credential does not grant: it must not be sent`,
            reason: 'header_not_granted',
          },
        };
      }
      text = raw === MISSING ? undefined : raw;
      actual = raw === MISSING ? MISSING : typedText(bounded, grantedValue, raw);
      if (raw !== MISSING) headers[binding.field] = raw;
    } else if (binding.in === 'body') {
      const alias = binding.field.includes('.') ? dottedAlias(request.body, binding.field) : undefined;
      if (alias !== undefined) {
        return {
          checked,
          failure: {
            rule: `constraint:${name}`,
            description: `body field ${binding.field} is also sent as the member ${alias} (some upstreams read a dotted key as the path)`,
            reason: 'ambiguous_parameter',
          },
        };
      }
      actual = request.body === undefined ? MISSING : bodyField(request.body, binding.field);
    } else {
      // A location this engine does not read (a row written outside the admin API): never trusted.
      return { checked, failure: { rule: `constraint:${name}`, description: `constraint ${name} reads a location the gateway does not check` } };
    }
    if (actual === MISSING) {
      if (!inGrant) continue;
      checked.push({ name, in: binding.in, op: binding.op, granted: grantedValue, actual: null, ok: false });
      return { checked, failure: { rule: `constraint:${name}`, description: `${binding.in} field ${binding.field} is required by constraint ${name}` } };
    }
    const problem = numberProblem(binding, actual, request, text);
    if (problem) {
      return { checked, invalid: { field: `${binding.in}.${binding.field}`, description: `${binding.in} field ${binding.field} ${problem}` } };
    }
    if (bounded && !withinBounds(binding, actual)) {
      checked.push({ name, in: binding.in, op: binding.op, granted: grantedValue ?? null, actual, ok: false });
      const range = `${binding.min ?? '-∞'} to ${binding.max ?? '∞'}`;
      return {
        checked,
        failure: { rule: `constraint:${name}`, description: `${binding.in} field ${binding.field} is outside the catalogue's bounds for ${name} (${range})` },
      };
    }
    if (!inGrant) continue;
    const ok = matchConstraint(binding.op, grantedValue, actual);
    checked.push({ name, in: binding.in, op: binding.op, granted: grantedValue, actual, ok });
    if (!ok) {
      return {
        checked,
        failure: { rule: `constraint:${name}`, description: `${binding.in} field ${binding.field} is outside the granted ${name} (${binding.op})` },
      };
    }
  }
  return Object.keys(headers).length > 0 ? { checked, headers } : { checked };
}

/** True when the operation reads any of the granted constraints, or a bounded one, from the body. */
export function needsBody(operation: ConnectorOperation, granted: Record<string, unknown> | undefined): boolean {
  const constraints = operation.constraints ?? {};
  return (
    Object.keys(granted ?? {}).some((name) => constraints[name]?.in === 'body') ||
    Object.values(constraints).some((binding) => binding.in === 'body' && isBounded(binding))
  );
}

/**
 * True when the call has anything to check: a granted constraint, or a catalogue bound. Its
 * body must then be readable as sent, even when no constraint reads the body: an upstream
 * merging body parameters with the query's or the path's must not find a checked name there.
 */
export function hasConstraints(operation: ConnectorOperation, granted: Record<string, unknown> | undefined): boolean {
  return Object.keys(granted ?? {}).length > 0 || Object.values(operation.constraints ?? {}).some(isBounded);
}
