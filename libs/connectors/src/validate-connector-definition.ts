import { CONNECTOR_ID_PATTERN } from '@writ/oauth';
import {
  CONNECTOR_CONSTRAINT_OPERATORS,
  CONNECTOR_KINDS,
  CONNECTOR_LIMITS,
  CONNECTOR_METHODS,
  CONSTRAINT_FIELD_PATTERN,
  CONSTRAINT_LOCATIONS,
  CONSTRAINT_NAME_PATTERN,
  CREATE_CONNECTOR_SCHEMA,
  CREDENTIAL_SCHEMAS,
  HEADER_NAME_PATTERN,
  HEADER_VALUE,
  HTTP_CONSTRAINT_SCHEMA,
  HTTP_OPERATION_SCHEMA,
  OPERATION_NAME_PATTERN,
  OPERATION_RISKS,
  PRINTABLE_ASCII,
  SCOPE,
  SCOPE_TOKEN,
  TOOL_NAME_PATTERN,
  TOOL_OPERATION_SCHEMA,
  UPDATE_CONNECTOR_SCHEMA,
  VISIBLE_ASCII,
  type ConnectorConstraintDefinition,
  type ConnectorDefinition,
  type ConnectorDefinitionPatch,
  type ConnectorFieldError,
  type ConnectorKind,
  type ConnectorOperationDefinition,
} from './connector-definition.schema';
import { normalParameterName } from './parameter-names';
import { ambiguousPathExample, compilePathTemplate, PathTemplate, PathTemplateError } from './path-template';
import { CREDENTIAL_TYPES, type OAuth2AuthorizationCode, type UpstreamCredential } from './upstream-credential';
import { isForbiddenCredentialHeader, isUnconstrainableHeader, isUnlistableRequestHeader } from './upstream-headers';

/** Names that mean something to JavaScript objects: never a constraint name or field segment. */
const RESERVED_NAMES = new Set(['__proto__', 'constructor', 'prototype']);

const MAX_NAME_LENGTH = CONNECTOR_LIMITS.name;
const MAX_URL_LENGTH = CONNECTOR_LIMITS.url;
const MAX_OPERATIONS = CONNECTOR_LIMITS.operations;
const MAX_CONSTRAINTS = CONNECTOR_LIMITS.constraints;
const MAX_FIELD_LENGTH = CONNECTOR_LIMITS.field;
const MAX_SECRET_LENGTH = CONNECTOR_LIMITS.secret;

/** The outcome of a validation: the normalised value, or every problem found. */
export type ConnectorValidationResult<T> = { ok: true; value: T } | { ok: false; errors: ConnectorFieldError[] };

// The members accepted at each level are the schema's (connector-definition.schema.ts).
const members = (schema: { properties: Record<string, unknown> }): string[] => Object.keys(schema.properties);
const TOP_LEVEL_CREATE = members(CREATE_CONNECTOR_SCHEMA);
const TOP_LEVEL_UPDATE = members(UPDATE_CONNECTOR_SCHEMA);
const OPERATION_MEMBERS = members(HTTP_OPERATION_SCHEMA);
const TOOL_MEMBERS = members(TOOL_OPERATION_SCHEMA);
const CONSTRAINT_MEMBERS = members(HTTP_CONSTRAINT_SCHEMA);

class Collector {
  readonly errors: ConnectorFieldError[] = [];
  add(field: string, message: string): void {
    this.errors.push({ field, message });
  }
  get count(): number {
    return this.errors.length;
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

function refuseUnknown(value: Record<string, unknown>, allowed: readonly string[], prefix: string, out: Collector): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) out.add(prefix ? `${prefix}.${key}` : key, 'unknown field');
  }
}

/** Why `value` is not an acceptable absolute http(s) URL, or undefined when it is. */
function urlProblem(value: unknown, options: { allowQuery: boolean }): string | undefined {
  if (typeof value !== 'string' || value.length === 0) return 'must be an absolute http(s) URL';
  if (value.length > MAX_URL_LENGTH) return `must be at most ${MAX_URL_LENGTH} characters`;
  if (/[\s\x00-\x1f\x7f]/.test(value)) return 'must not contain whitespace or control characters';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an absolute http(s) URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must use http or https';
  if (!/^https?:\/\//i.test(value) || !url.hostname) return 'must be an absolute http(s) URL';
  const authority = value.slice(value.indexOf('//') + 2).split(/[/?#\\]/, 1)[0];
  if (url.username || url.password || authority.includes('@')) return 'must not contain userinfo (credentials belong in credential)';
  if (value.includes('#')) return 'must not contain a fragment';
  if (!options.allowQuery && value.includes('?')) return 'must not contain a query';
  return notAsReached(value, url);
}

/**
 * Why `value` is not written as the URL parser reads it, or undefined. What an admin reads back
 * must be where the gateway sends: the parser maps internationalised hosts to their `xn--` form
 * (`раypal.example`, Cyrillic `ра`, is not `paypal.example`) and full-width dots to dots, reads
 * `0x7f.1` as 127.0.0.1, and resolves `%2e%2e` segments and backslashes in the path.
 */
function notAsReached(value: string, url: URL): string | undefined {
  if (/[^\x21-\x7e]/.test(value)) return `must be ASCII (an internationalised host in its xn-- form: ${safeUrlPart(url.hostname)})`;
  const [, authority, path] = /^https?:\/\/([^/?#\\]*)([^?#]*)/i.exec(value) ?? [];
  const defaultPort = url.protocol === 'https:' ? ':443' : ':80';
  const host = (authority ?? '').toLowerCase();
  if (host !== url.host && host !== `${url.host}${defaultPort}`) return `must name its host as it is reached (${safeUrlPart(url.host)})`;
  if (path !== '' && path !== url.pathname) return 'must have its path in normal form (no dot segments, encoded dots or backslashes)';
  return undefined;
}

function safeUrlPart(value: string): string {
  return value.replace(/[^\x21-\x7e]/g, '?').slice(0, 128);
}

function checkName(value: unknown, field: string, out: Collector): string | undefined {
  if (typeof value !== 'string' || value.trim().length === 0) {
    out.add(field, 'must be a non-empty string');
    return undefined;
  }
  if (value.length > MAX_NAME_LENGTH) {
    out.add(field, `must be at most ${MAX_NAME_LENGTH} characters`);
    return undefined;
  }
  if (/[\x00-\x1f\x7f]/.test(value)) {
    out.add(field, 'must not contain control characters');
    return undefined;
  }
  return value;
}

function checkBaseUrl(value: unknown, out: Collector): string | undefined {
  const problem = urlProblem(value, { allowQuery: false });
  if (problem) {
    out.add('base_url', problem);
    return undefined;
  }
  return value as string;
}

function checkConstraint(
  raw: unknown,
  field: string,
  method: string | undefined,
  template: PathTemplate | undefined,
  out: Collector,
  kind: ConnectorKind = 'http',
): ConnectorConstraintDefinition | undefined {
  if (!isPlainObject(raw)) {
    out.add(field, 'must be an object {in, field, op}');
    return undefined;
  }
  const before = out.count;
  refuseUnknown(raw, CONSTRAINT_MEMBERS, field, out);
  const location = raw.in;
  if (kind === 'mcp') {
    // A tool call has no path, query or body of its own to constrain: only its arguments.
    if (location !== 'arguments') out.add(`${field}.in`, "must be arguments (a field of the tool call's params.arguments)");
  } else if (location === 'arguments' || !CONSTRAINT_LOCATIONS.includes(location as never)) {
    out.add(`${field}.in`, 'must be one of path, query, body, header (arguments is for mcp connectors)');
  }
  const op = raw.op;
  if (!CONNECTOR_CONSTRAINT_OPERATORS.includes(op as never)) {
    out.add(`${field}.op`, `must be one of ${CONNECTOR_CONSTRAINT_OPERATORS.join(', ')}`);
  }
  const target = raw.field;
  const noBody = method === 'GET' || method === 'HEAD' || method === 'DELETE';
  if (typeof target !== 'string' || target.length === 0 || target.length > MAX_FIELD_LENGTH || !CONSTRAINT_FIELD_PATTERN.test(target)) {
    out.add(`${field}.field`, 'must be a field name or a dotted path (letters, digits, _ and -, segments joined by .)');
  } else if (target.split('.').some((segment) => RESERVED_NAMES.has(segment))) {
    out.add(`${field}.field`, 'must not use __proto__, constructor or prototype');
  } else if (location === 'header' && (target.length > CONNECTOR_LIMITS.headerName || !HEADER_NAME_PATTERN.test(target))) {
    out.add(`${field}.field`, 'must be an HTTP header name');
  } else if (location === 'header' && isUnconstrainableHeader(target)) {
    out.add(
      `${field}.field`,
      'is a header the gateway controls, sets or drops (credentials, framing, routing, hop-by-hop, method override, encoding, range, trace context)',
    );
  } else if (location === 'path' && template && !template.params.includes(target)) {
    out.add(`${field}.field`, `must be a parameter of the path template (${template.params.map((p) => `{${p}}`).join(', ') || 'it has none'})`);
  } else if ((location === 'query' || (location === 'body' && !noBody)) && template) {
    // The gateway refuses every call that sends a checked name in two of the path, the query and
    // the body (`field_in_two_places`), and a path parameter is always sent: no call could pass.
    const param = pathParamNamed(template, location === 'body' ? target.split('.')[0] : target);
    if (param !== undefined) {
      out.add(
        `${field}.in`,
        `${location} field ${target} is also the path parameter {${param}} (names compared as upstream frameworks read them, ignoring case): bind it in path, or constrain another field`,
      );
    }
  }
  if (location === 'body' && noBody) {
    out.add(`${field}.in`, `a ${method} request has no body to constrain`);
  }
  const min = checkBound(raw.min, `${field}.min`, out);
  const max = checkBound(raw.max, `${field}.max`, out);
  if (min !== undefined && max !== undefined && min > max) out.add(`${field}.max`, 'must not be below min');
  if (out.count > before) return undefined;
  return {
    in: location as ConnectorConstraintDefinition['in'],
    field: target as string,
    op: op as ConnectorConstraintDefinition['op'],
    ...(min !== undefined ? { min } : {}),
    ...(max !== undefined ? { max } : {}),
  };
}

/** The template parameter an upstream framework may read as `name` ({@link normalParameterName}), if any. */
function pathParamNamed(template: PathTemplate, name: string): string | undefined {
  const normal = normalParameterName(name);
  return template.params.find((param) => normalParameterName(param) === normal);
}

/** A catalogue bound: a finite number no larger in magnitude than 2^53 - 1 (what the gateway compares exactly), not -0. */
function checkBound(value: unknown, field: string, out: Collector): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || Math.abs(value) > CONNECTOR_LIMITS.bound || Object.is(value, -0)) {
    out.add(field, `must be a number from -${CONNECTOR_LIMITS.bound} to ${CONNECTOR_LIMITS.bound}`);
    return undefined;
  }
  return value;
}

function checkTool(raw: Record<string, unknown>, prefix: string, out: Collector): ConnectorOperationDefinition | undefined {
  const before = out.count;
  for (const key of ['method', 'path']) {
    if (Object.hasOwn(raw, key)) out.add(`${prefix}.${key}`, "an mcp connector's operations are tools: they have no method or path");
  }
  refuseUnknown(Object.fromEntries(Object.entries(raw).filter(([key]) => key !== 'method' && key !== 'path')), TOOL_MEMBERS, prefix, out);
  const { name, risk } = raw;
  if (typeof name !== 'string' || !TOOL_NAME_PATTERN.test(name)) {
    out.add(`${prefix}.name`, 'must be an MCP tool name: 1 to 128 characters, letters, digits, _, - and ., starting with a letter or digit');
  }
  if (!OPERATION_RISKS.includes(risk as never)) out.add(`${prefix}.risk`, `must be one of ${OPERATION_RISKS.join(', ')}`);
  const constraints = checkConstraintMap(raw.constraints, prefix, undefined, undefined, out, 'mcp');
  // An MCP server may act on request headers as an HTTP API does (a tenant or account it
  // forwards to its own upstream): a tool's allowlist is checked as an operation's.
  const requestHeaders = raw.request_headers === undefined ? undefined : checkRequestHeaders(raw.request_headers, `${prefix}.request_headers`, out);
  if (out.count > before || !constraints) return undefined;
  return {
    name: name as string,
    risk: risk as ConnectorOperationDefinition['risk'],
    constraints,
    ...(requestHeaders ? { request_headers: requestHeaders } : {}),
  };
}

function checkConstraintMap(
  rawConstraints: unknown,
  prefix: string,
  method: string | undefined,
  template: PathTemplate | undefined,
  out: Collector,
  kind: ConnectorKind,
): Record<string, ConnectorConstraintDefinition> | undefined {
  const before = out.count;
  const constraints: Record<string, ConnectorConstraintDefinition> = {};
  rawConstraints ??= {};
  if (!isPlainObject(rawConstraints)) {
    out.add(`${prefix}.constraints`, 'must be an object mapping constraint names to {in, field, op}');
    return undefined;
  }
  const names = Object.keys(rawConstraints);
  if (names.length > MAX_CONSTRAINTS) out.add(`${prefix}.constraints`, `must have at most ${MAX_CONSTRAINTS} constraints`);
  for (const constraintName of names) {
    const field = `${prefix}.constraints.${constraintName}`;
    if (!CONSTRAINT_NAME_PATTERN.test(constraintName) || RESERVED_NAMES.has(constraintName)) {
      out.add(field, 'constraint names are 1 to 64 characters: letters, digits, _, . and -');
      continue;
    }
    // Path parameters are only checked against a template that compiled.
    const binding = checkConstraint(rawConstraints[constraintName], field, method, template, out, kind);
    if (binding) constraints[constraintName] = binding;
  }
  return out.count > before ? undefined : constraints;
}

function checkOperation(raw: unknown, prefix: string, out: Collector, kind: ConnectorKind = 'http'): ConnectorOperationDefinition | undefined {
  if (isPlainObject(raw) && kind === 'mcp') return checkTool(raw, prefix, out);
  if (!isPlainObject(raw)) {
    out.add(prefix, 'must be an object {name, method, path, risk, constraints}');
    return undefined;
  }
  const before = out.count;
  refuseUnknown(raw, OPERATION_MEMBERS, prefix, out);
  const { name, method, path, risk } = raw;
  if (typeof name !== 'string' || !OPERATION_NAME_PATTERN.test(name)) {
    out.add(`${prefix}.name`, 'must be 1 to 128 characters: letters, digits, ., _, : and -, starting with a letter or digit');
  }
  const knownMethod = CONNECTOR_METHODS.includes(method as never) ? (method as string) : undefined;
  if (!knownMethod) out.add(`${prefix}.method`, `must be one of ${CONNECTOR_METHODS.join(', ')}`);
  let template: PathTemplate | undefined;
  if (typeof path !== 'string') out.add(`${prefix}.path`, 'must be a path template such as /repos/{owner}/{repo}');
  else {
    try {
      template = compilePathTemplate(path);
    } catch (error) {
      out.add(`${prefix}.path`, error instanceof PathTemplateError ? error.message : 'is not a valid path template');
    }
    // `{Repo}` and `{repo}`: frameworks that merge path parameters ignoring case read one name with
    // two values, and the gateway refuses every constrained call on it (`field_in_two_places`).
    template?.params.forEach((param, index) => {
      const first = template!.params.slice(0, index).find((other) => normalParameterName(other) === normalParameterName(param));
      if (first !== undefined) out.add(`${prefix}.path`, `parameters {${first}} and {${param}} differ only in case: upstream frameworks may read them as one`);
    });
  }
  if (!OPERATION_RISKS.includes(risk as never)) out.add(`${prefix}.risk`, `must be one of ${OPERATION_RISKS.join(', ')}`);
  const constraints = checkConstraintMap(raw.constraints, prefix, knownMethod, template, out, 'http');
  const requestHeaders = raw.request_headers === undefined ? undefined : checkRequestHeaders(raw.request_headers, `${prefix}.request_headers`, out);
  if (out.count > before || !constraints) return undefined;
  return {
    name: name as string,
    method: knownMethod as ConnectorOperationDefinition['method'],
    path: path as string,
    risk: risk as ConnectorOperationDefinition['risk'],
    constraints,
    ...(requestHeaders ? { request_headers: requestHeaders } : {}),
  };
}

/**
 * An operation's `request_headers`: at most {@link CONNECTOR_LIMITS.requestHeaders} HTTP header
 * names, none twice (ignoring case, `_` read as `-`), none the gateway drops or sets.
 */
function checkRequestHeaders(value: unknown, field: string, out: Collector): string[] | undefined {
  if (!Array.isArray(value)) {
    out.add(field, 'must be an array of header names');
    return undefined;
  }
  if (value.length > CONNECTOR_LIMITS.requestHeaders) {
    out.add(field, `must list at most ${CONNECTOR_LIMITS.requestHeaders} headers`);
    return undefined;
  }
  const before = out.count;
  const seen = new Map<string, number>();
  value.forEach((name: unknown, index) => {
    const at = `${field}[${index}]`;
    if (typeof name !== 'string' || name.length === 0 || name.length > CONNECTOR_LIMITS.headerName || !HEADER_NAME_PATTERN.test(name)) {
      out.add(at, `must be an HTTP header name (at most ${CONNECTOR_LIMITS.headerName} characters)`);
      return;
    }
    if (isUnlistableRequestHeader(name)) {
      out.add(at, 'is a header the gateway drops or sets itself (credentials, Host, Cookie, Expect, Accept-Encoding, hop-by-hop, method override, routing)');
      return;
    }
    const key = name.toLowerCase().replace(/_/g, '-');
    const first = seen.get(key);
    if (first !== undefined) out.add(at, `duplicates ${field}[${first}] (ignoring case, _ read as -)`);
    else seen.set(key, index);
  });
  return out.count > before ? undefined : (value as string[]);
}

/** The shape a template matches, whatever its parameters are called: `/a/{x}` and `/a/{y}` are one route. */
function routeShape(template: string): string {
  return template.replace(/\{[^/}]*\}/g, '{}');
}

function checkOperations(value: unknown, out: Collector, kind: ConnectorKind = 'http'): ConnectorOperationDefinition[] | undefined {
  if (!Array.isArray(value) || value.length === 0) {
    out.add('operations', 'must be a non-empty array of operations');
    return undefined;
  }
  if (value.length > MAX_OPERATIONS) {
    out.add('operations', `must have at most ${MAX_OPERATIONS} operations`);
    return undefined;
  }
  const before = out.count;
  const operations: ConnectorOperationDefinition[] = [];
  const names = new Map<string, { index: number; name: string }>();
  const routes = new Map<string, number>();
  const templates: Array<{ index: number; method: string; template: PathTemplate }> = [];
  value.forEach((raw, index) => {
    const prefix = `operations[${index}]`;
    const operation = checkOperation(raw, prefix, out, kind);
    const name = isPlainObject(raw) ? raw.name : undefined;
    if (typeof name === 'string') {
      // Names are compared ignoring case. HTTP operation names are Writ's labels: `payouts.create`
      // and `Payouts.Create` would read as one action in a task, a grant or policy data. MCP tool
      // names go to the server, which may look them up ignoring case: `Lookup` granted must not
      // reach a `lookup`.
      const key = name.toLowerCase();
      const first = names.get(key);
      if (first !== undefined) out.add(`${prefix}.name`, `duplicates operations[${first.index}].name${first.name === name ? '' : ' (ignoring case)'}`);
      else names.set(key, { index, name });
    }
    if (operation && kind === 'http') {
      const route = `${operation.method} ${routeShape(operation.path!)}`;
      const first = routes.get(route);
      if (first !== undefined) out.add(`${prefix}.path`, `operations[${first}] already has the same method and path`);
      else {
        routes.set(route, index);
        // The gateway runs the most specific of the templates a request matches: two that
        // overlap with neither more specific (`/a/{x}/c`, `/a/b/{y}`) would leave `/a/b/c` to
        // chance, or to whichever the upstream's router tries first.
        const template = compilePathTemplate(operation.path!);
        const other = templates.find((entry) => entry.method === operation.method && ambiguousPathExample(entry.template, template) !== undefined);
        if (other) {
          const example = ambiguousPathExample(other.template, template)!;
          out.add(
            `${prefix}.path`,
            `overlaps operations[${other.index}].path (${other.template.source}) with neither more specific: ${operation.method} ${example} would match both`,
          );
        } else templates.push({ index, method: operation.method!, template });
      }
    }
    if (operation) operations.push(operation);
  });
  return out.count > before ? undefined : operations;
}

function checkSecret(value: unknown, field: string, out: Collector, pattern: RegExp, shape: string): string | undefined {
  // Messages never quote the value: it is a secret.
  if (typeof value !== 'string' || value.length === 0) out.add(field, 'must be a non-empty string');
  else if (value.length > MAX_SECRET_LENGTH) out.add(field, `must be at most ${MAX_SECRET_LENGTH} characters`);
  else if (!pattern.test(value)) out.add(field, `must be ${shape}`);
  else return value;
  return undefined;
}

function checkCredential(value: unknown, out: Collector): UpstreamCredential | undefined {
  if (!isPlainObject(value)) {
    out.add('credential', `must be an object with a type (${CREDENTIAL_TYPES.join(', ')})`);
    return undefined;
  }
  const type = value.type;
  if (!CREDENTIAL_TYPES.includes(type as never)) {
    out.add('credential.type', `must be one of ${CREDENTIAL_TYPES.join(', ')}`);
    return undefined;
  }
  const kind = type as UpstreamCredential['type'];
  const before = out.count;
  refuseUnknown(value, members(CREDENTIAL_SCHEMAS[kind]), 'credential', out);
  switch (kind) {
    case 'bearer': {
      const token = checkSecret(value.token, 'credential.token', out, VISIBLE_ASCII, 'printable ASCII without spaces');
      return out.count > before || token === undefined ? undefined : { type: 'bearer', token };
    }
    case 'header': {
      const name = value.name;
      if (typeof name !== 'string' || name.length === 0 || name.length > CONNECTOR_LIMITS.headerName || !HEADER_NAME_PATTERN.test(name)) {
        out.add('credential.name', 'must be a valid HTTP header name');
      } else if (isForbiddenCredentialHeader(name)) {
        out.add(
          'credential.name',
          'is a header the gateway controls or drops (framing, routing, hop-by-hop, method override; use type bearer for Authorization)',
        );
      }
      const header = checkSecret(value.value, 'credential.value', out, HEADER_VALUE, 'a valid HTTP header value (printable ASCII, no line breaks)');
      return out.count > before || header === undefined ? undefined : { type: 'header', name: name as string, value: header };
    }
    case 'oauth2_client_credentials': {
      const problem = urlProblem(value.token_url, { allowQuery: true });
      if (problem) out.add('credential.token_url', problem);
      const clientId = value.client_id;
      if (typeof clientId !== 'string' || clientId.length === 0 || clientId.length > CONNECTOR_LIMITS.clientId || !PRINTABLE_ASCII.test(clientId)) {
        out.add('credential.client_id', 'must be 1 to 1024 printable ASCII characters');
      }
      const secret = checkSecret(value.client_secret, 'credential.client_secret', out, PRINTABLE_ASCII, 'printable ASCII');
      const scope = value.scope;
      if (scope !== undefined && (typeof scope !== 'string' || scope.length > CONNECTOR_LIMITS.scope || !SCOPE.test(scope))) {
        out.add('credential.scope', 'must be space-separated scope tokens (RFC 6749 section 3.3)');
      }
      if (out.count > before || secret === undefined) return undefined;
      return {
        type: 'oauth2_client_credentials',
        token_url: value.token_url as string,
        client_id: clientId as string,
        client_secret: secret,
        ...(scope !== undefined ? { scope: scope as string } : {}),
      };
    }
    case 'oauth2_authorization_code':
      return checkAuthorizationCode(value, out, before);
  }
}

const JWK_MEMBER = /^[A-Za-z0-9_-]{1,64}$/;

/** The curves and key types Writ signs client assertions with, and the JWS algorithm of each. */
export function privateKeyJwtAlg(jwk: { kty?: unknown; crv?: unknown; alg?: unknown }): string | undefined {
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  if (jwk.kty === 'EC' && jwk.crv === 'P-384') return 'ES384';
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  if (jwk.kty === 'RSA') return jwk.alg === 'PS256' ? 'PS256' : 'RS256';
  return undefined;
}

function checkPrivateKeyJwt(value: unknown, out: Collector): OAuth2AuthorizationCode['private_key_jwt'] {
  // Messages never quote the key: it is a secret.
  if (!isPlainObject(value)) {
    out.add('credential.private_key_jwt', 'must be an object {jwk}');
    return undefined;
  }
  refuseUnknown(value, ['jwk'], 'credential.private_key_jwt', out);
  const jwk = value.jwk;
  if (
    !isPlainObject(jwk) ||
    typeof jwk.d !== 'string' ||
    !privateKeyJwtAlg(jwk) ||
    !Object.entries(jwk).every(([name, member]) => JWK_MEMBER.test(name) && (typeof member === 'string' ? member.length <= 8192 : Array.isArray(member)))
  ) {
    out.add('credential.private_key_jwt.jwk', 'must be a private JWK (with d) of type EC P-256/P-384, OKP Ed25519 or RSA');
    return undefined;
  }
  return { jwk: jwk as NonNullable<OAuth2AuthorizationCode['private_key_jwt']>['jwk'] };
}

function checkAuthorizationCode(value: Record<string, unknown>, out: Collector, before: number): UpstreamCredential | undefined {
  for (const field of ['authorization_url', 'token_url', 'revocation_url'] as const) {
    if (field === 'revocation_url' && value[field] === undefined) continue;
    const problem = urlProblem(value[field], { allowQuery: field === 'authorization_url' });
    if (problem) out.add(`credential.${field}`, problem);
  }
  if (value.issuer !== undefined) {
    const problem = urlProblem(value.issuer, { allowQuery: false });
    if (problem) out.add('credential.issuer', problem);
  }
  const clientId = value.client_id;
  if (typeof clientId !== 'string' || clientId.length === 0 || clientId.length > CONNECTOR_LIMITS.clientId || !PRINTABLE_ASCII.test(clientId)) {
    out.add('credential.client_id', 'must be 1 to 1024 printable ASCII characters');
  }
  let secret: string | undefined;
  let privateKeyJwt: OAuth2AuthorizationCode['private_key_jwt'];
  if ((value.client_secret === undefined) === (value.private_key_jwt === undefined)) {
    out.add('credential.client_secret', 'give exactly one of client_secret and private_key_jwt');
  } else if (value.client_secret !== undefined) {
    secret = checkSecret(value.client_secret, 'credential.client_secret', out, PRINTABLE_ASCII, 'printable ASCII');
  } else {
    privateKeyJwt = checkPrivateKeyJwt(value.private_key_jwt, out);
  }
  const scopes = value.scopes;
  if (!Array.isArray(scopes) || scopes.length > CONNECTOR_LIMITS.scopes || !scopes.every((scope) => typeof scope === 'string' && SCOPE_TOKEN.test(scope))) {
    out.add('credential.scopes', 'must be an array of at most 64 scope tokens (RFC 6749 section 3.3)');
  }
  if (out.count > before || (secret === undefined && privateKeyJwt === undefined)) return undefined;
  return {
    type: 'oauth2_authorization_code',
    authorization_url: value.authorization_url as string,
    token_url: value.token_url as string,
    client_id: clientId as string,
    ...(secret !== undefined ? { client_secret: secret } : {}),
    ...(privateKeyJwt ? { private_key_jwt: privateKeyJwt } : {}),
    scopes: [...new Set(scopes as string[])],
    ...(value.revocation_url !== undefined ? { revocation_url: value.revocation_url as string } : {}),
    ...(value.issuer !== undefined ? { issuer: value.issuer as string } : {}),
  };
}

function result<T>(out: Collector, value: () => T): ConnectorValidationResult<T> {
  return out.count > 0 ? { ok: false, errors: out.errors } : { ok: true, value: value() };
}

/**
 * Validates a connector definition for `POST /v1/connectors` and returns it normalised, or
 * every problem by field (`operations[1].constraints.amount.op`, `credential.token`...).
 * Refuses unknown members at every level; an id outside `[a-z0-9][a-z0-9_.-]{0,63}`;
 * a `base_url` that is not an absolute http(s) URL or carries userinfo, a query or a
 * fragment; an empty catalogue, duplicate operation names, two operations on the same
 * method and path, two templates on the same method that some path matches with neither
 * more specific than the other (`/a/{x}/c` and `/a/b/{y}`: the gateway runs the most specific
 * template a request matches), a path that is not a template, an unknown method, risk, location or
 * operator; a path template with two parameters that differ only in case (`{Repo}` and
 * `{repo}`); a `path` constraint on a field that is not a template parameter, a `query` or
 * `body` constraint on a name that is also a template parameter (compared as
 * {@link normalParameterName} reads them, as the gateway does), a `body`
 * constraint on GET, HEAD or DELETE, a field that is not a name or dotted path; and a
 * malformed credential. An `mcp` connector's operations are tools `{name, risk,
 * constraints}` whose constraints read `arguments` only (no method, path, or other
 * location); an `http` connector's never read `arguments`. Messages never repeat a secret.
 */
export function validateConnectorDefinition(input: unknown): ConnectorValidationResult<ConnectorDefinition> {
  const out = new Collector();
  if (!isPlainObject(input)) {
    out.add('', 'must be a JSON object');
    return { ok: false, errors: out.errors };
  }
  refuseUnknown(input, TOP_LEVEL_CREATE, '', out);
  const id = input.id;
  if (typeof id !== 'string' || !CONNECTOR_ID_PATTERN.test(id)) {
    out.add('id', 'must be 1 to 64 characters: lowercase letters, digits, _, . and -, starting with a letter or digit');
  }
  const kind = input.kind ?? 'http';
  const knownKind = CONNECTOR_KINDS.includes(kind as never);
  if (!knownKind) out.add('kind', `must be one of ${CONNECTOR_KINDS.join(', ')}`);
  const name = checkName(input.name, 'name', out);
  const baseUrl = checkBaseUrl(input.base_url, out);
  // Operations mean something only for a known kind.
  const operations = knownKind ? checkOperations(input.operations, out, kind as ConnectorKind) : undefined;
  const credential = input.credential === undefined ? undefined : checkCredential(input.credential, out);
  return result(out, () => ({
    id: id as string,
    kind: kind as ConnectorKind,
    name: name!,
    base_url: baseUrl!,
    operations: operations!,
    ...(credential ? { credential } : {}),
  }));
}

/**
 * Validates a change for `PATCH /v1/connectors/{id}`: the same rules as
 * {@link validateConnectorDefinition} for each member given (operations by the stored
 * connector's `kind`); `id` and `kind` cannot change;
 * `"credential": null` removes the credential.
 */
export function validateConnectorPatch(input: unknown, kind: ConnectorKind = 'http'): ConnectorValidationResult<ConnectorDefinitionPatch> {
  const out = new Collector();
  if (!isPlainObject(input)) {
    out.add('', 'must be a JSON object');
    return { ok: false, errors: out.errors };
  }
  refuseUnknown(input, TOP_LEVEL_UPDATE, '', out);
  const patch: ConnectorDefinitionPatch = {};
  if (input.name !== undefined) patch.name = checkName(input.name, 'name', out);
  if (input.base_url !== undefined) patch.base_url = checkBaseUrl(input.base_url, out);
  if (input.operations !== undefined) patch.operations = checkOperations(input.operations, out, kind);
  if (input.credential === null) patch.credential = null;
  else if (input.credential !== undefined) patch.credential = checkCredential(input.credential, out);
  return result(out, () => patch);
}
