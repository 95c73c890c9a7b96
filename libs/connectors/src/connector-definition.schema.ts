import { CONNECTOR_ID_PATTERN, CONSTRAINT_OPERATORS, type ConstraintOperator } from '@writ/oauth';
import { CREDENTIAL_TYPES, type UpstreamCredential } from './upstream-credential';

// The connector model, in one place: its vocabularies and limits, its TypeScript types and
// its JSON Schema. validateConnectorDefinition takes the members it accepts and the limits
// it enforces from here; the admin API publishes these schemas as its OpenAPI request
// bodies. The schema states the shape (members, types, enums, patterns, lengths); the
// validator adds what a schema cannot say (URL destinations, path templates, duplicates,
// the method/body and kind/location couplings) and names every problem by its field.
// The `satisfies` clauses below make the compiler refuse a type member the schema lacks
// or a schema member the type lacks.

/** The HTTP methods a catalogue operation may use. */
export const CONNECTOR_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
/** How risky an operation is: the policy caps credential lifetimes by it. */
export const OPERATION_RISKS = ['read', 'write'] as const;
/**
 * Where a constraint reads its value in a request (`header`: a request header of an `http`
 * operation, named case-insensitively; `arguments`: an MCP tool call's `params.arguments`).
 */
export const CONSTRAINT_LOCATIONS = ['path', 'query', 'body', 'header', 'arguments'] as const;
/** What a connector fronts: an HTTP API (operations are method + path) or a Streamable HTTP MCP server (operations are tools). */
export const CONNECTOR_KINDS = ['http', 'mcp'] as const;
/** A connector's kind. */
export type ConnectorKind = (typeof CONNECTOR_KINDS)[number];
/** How a constraint compares the request value with the granted one (the operators of `@writ/oauth`). */
export const CONNECTOR_CONSTRAINT_OPERATORS = CONSTRAINT_OPERATORS;

/** Operation names: what `authorization_details.actions` list. */
export const OPERATION_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** MCP tool names (the 2025-06-18 specification's recommended characters, starting with a letter or digit, as operation names do). */
export const TOOL_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Constraint names: the keys of a grant's `constraints` (same rule as `authorization_details`). */
export const CONSTRAINT_NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
/** A request field: a name or a dotted path into a JSON body. */
export const CONSTRAINT_FIELD_PATTERN = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
/** An HTTP header name (RFC 9110 `token`). */
export const HEADER_NAME_PATTERN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A bearer token: visible ASCII, no spaces. */
export const VISIBLE_ASCII = /^[\x21-\x7e]+$/;
/** A header value: printable ASCII and tabs, no line breaks, no leading or trailing space. */
export const HEADER_VALUE = /^[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?$/;
/** Client ids and secrets. */
export const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;
/** A space-separated `scope` (RFC 6749 section 3.3). */
export const SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]+(?: [\x21\x23-\x5b\x5d-\x7e]+)*$/;
/** One scope token (RFC 6749 section 3.3). */
export const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/;

/** The limits of a definition: what the schema publishes and the validator enforces. */
export const CONNECTOR_LIMITS = {
  name: 200,
  url: 2048,
  operations: 256,
  constraints: 32,
  field: 256,
  secret: 8192,
  headerName: 256,
  /** Names an operation's `request_headers` may list. */
  requestHeaders: 64,
  clientId: 1024,
  scope: 2048,
  scopes: 64,
  /** A catalogue bound's magnitude: what the gateway compares exactly. */
  bound: Number.MAX_SAFE_INTEGER,
} as const;

/** One problem of a submitted connector definition, e.g. `operations[1].constraints.amount.op`. */
export interface ConnectorFieldError {
  field: string;
  message: string;
}

/** One constraint binding of a catalogue operation. */
export interface ConnectorConstraintDefinition {
  in: (typeof CONSTRAINT_LOCATIONS)[number];
  field: string;
  op: ConstraintOperator;
  /** Lowest value the request field may carry, whatever the grant says (the field must then be a number). */
  min?: number;
  /** Highest value the request field may carry, whatever the grant says (the field must then be a number). */
  max?: number;
}

/**
 * One operation of a connector's catalogue, normalised (`constraints` always present). An
 * `mcp` connector's operations are tools: `name` is the tool name, and they have no `method`
 * or `path`.
 */
export interface ConnectorOperationDefinition {
  name: string;
  method?: (typeof CONNECTOR_METHODS)[number];
  path?: string;
  risk: (typeof OPERATION_RISKS)[number];
  constraints: Record<string, ConnectorConstraintDefinition>;
  /**
   * The request headers the agent may send beside the gateway's safe set and the headers its
   * `header` constraints bind (`http`), or beside the transport's own (`mcp` tools); any other
   * is refused. Absent: every header the gateway does not drop is forwarded (the behaviour
   * before allowlists).
   */
  request_headers?: string[];
}

/** A whole connector definition (`POST /v1/connectors`). */
export interface ConnectorDefinition {
  id: string;
  /** `http` unless given; fixed at creation. */
  kind: ConnectorKind;
  name: string;
  base_url: string;
  operations: ConnectorOperationDefinition[];
  /** Write-only; absent when the connector has none yet. */
  credential?: UpstreamCredential;
}

/** A change to a connector (`PATCH /v1/connectors/{id}`): only the members given. */
export type ConnectorDefinitionPatch = Partial<Omit<ConnectorDefinition, 'id' | 'kind' | 'credential'>> & {
  /** A new credential (rotation), or `null` to remove the stored one. */
  credential?: UpstreamCredential | null;
};

/**
 * The subset of JSON Schema (and of the OpenAPI 3 schema object) the connector model uses;
 * `nullable`, `writeOnly` and `example` are OpenAPI's.
 */
export interface ConnectorJsonSchema {
  type?: 'object' | 'array' | 'string' | 'number';
  description?: string;
  enum?: string[];
  default?: string;
  pattern?: string;
  format?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  maxProperties?: number;
  required?: string[];
  properties?: Record<string, ConnectorJsonSchema>;
  additionalProperties?: boolean | ConnectorJsonSchema;
  propertyNames?: ConnectorJsonSchema;
  items?: ConnectorJsonSchema;
  oneOf?: ConnectorJsonSchema[];
  nullable?: boolean;
  writeOnly?: boolean;
  example?: unknown;
}

/** An object schema: the members it names are the only ones accepted. */
export interface ConnectorObjectSchema extends ConnectorJsonSchema {
  type: 'object';
  required: string[];
  properties: Record<string, ConnectorJsonSchema>;
  additionalProperties: false;
}

function object<P extends Record<string, ConnectorJsonSchema>>(
  properties: P,
  required: Array<keyof P & string>,
  extra: Omit<ConnectorJsonSchema, 'type' | 'properties' | 'required' | 'additionalProperties'> = {},
): ConnectorObjectSchema & { properties: P } {
  return { type: 'object', ...extra, required, additionalProperties: false, properties };
}

const string = (pattern: RegExp, maxLength: number, extra: ConnectorJsonSchema = {}): ConnectorJsonSchema => ({
  type: 'string',
  minLength: 1,
  maxLength,
  pattern: pattern.source,
  ...extra,
});
const url = (extra: ConnectorJsonSchema = {}): ConnectorJsonSchema => ({ type: 'string', format: 'uri', maxLength: CONNECTOR_LIMITS.url, ...extra });
const bound = (description: string, example: number): ConnectorJsonSchema => ({
  type: 'number',
  minimum: -CONNECTOR_LIMITS.bound,
  maximum: CONNECTOR_LIMITS.bound,
  example,
  description,
});

function constraintSchema(locations: Array<ConnectorConstraintDefinition['in']>): ConnectorObjectSchema {
  return object(
    {
      in: { type: 'string', enum: locations },
      field: string(CONSTRAINT_FIELD_PATTERN, CONNECTOR_LIMITS.field, {
        description:
          'a name or a dotted path (body, arguments), or a header name (header: matched ignoring case; it must then be sent exactly once, ' +
          'and is forwarded with exactly the checked value; not a header the gateway controls); never __proto__, constructor or prototype',
        example: 'amount',
      }),
      op: { type: 'string', enum: [...CONNECTOR_CONSTRAINT_OPERATORS] },
      min: bound('lowest value the request field may carry, whatever the grant says (the field must then be a number)', 0),
      max: bound('highest value the request field may carry, whatever the grant says (the field must then be a number); not below min', 1000000),
    } satisfies Record<keyof ConnectorConstraintDefinition, ConnectorJsonSchema>,
    ['in', 'field', 'op'],
  );
}

/** A constraint of an `http` connector's operation: it reads the path, the query, the body or a header. */
export const HTTP_CONSTRAINT_SCHEMA = constraintSchema(['path', 'query', 'body', 'header']);
/** A constraint of an `mcp` connector's tool: it reads the tool call's arguments. */
export const TOOL_CONSTRAINT_SCHEMA = constraintSchema(['arguments']);

const constraintMap = (binding: ConnectorJsonSchema, example: unknown): ConnectorJsonSchema => ({
  type: 'object',
  maxProperties: CONNECTOR_LIMITS.constraints,
  propertyNames: { type: 'string', pattern: CONSTRAINT_NAME_PATTERN.source },
  additionalProperties: binding,
  description: 'constraint name → the request field it binds and its operator',
  example,
});

/** An operation's (or a tool's) `request_headers`: the headers the agent may send beside the safe set. */
const REQUEST_HEADERS_SCHEMA: ConnectorJsonSchema = {
  type: 'array',
  maxItems: CONNECTOR_LIMITS.requestHeaders,
  items: string(HEADER_NAME_PATTERN, CONNECTOR_LIMITS.headerName),
  example: ['Stripe-Version', 'Idempotency-Key'],
  description:
    'the request headers the agent may send (names, any case), beside the safe set every call may carry (Accept, Accept-Language, ' +
    'Content-Type, Content-Length, User-Agent, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, traceparent, tracestate, ' +
    'Sec-Fetch-*) ' +
    'and the headers of its header constraints: any other is refused (400 naming it). Absent: every header the gateway does not drop ' +
    'is forwarded. Declare it (or header constraints) for an API whose headers can switch authority (Stripe-Account...). ' +
    'Not a header the gateway drops or sets (Authorization, Host, Cookie, DPoP, Expect, Accept-Encoding, hop-by-hop, method-override, routing).',
};

/** One operation of an `http` connector: a method and a path template. */
export const HTTP_OPERATION_SCHEMA = object(
  {
    name: string(OPERATION_NAME_PATTERN, 128, { example: 'payouts.create' }),
    method: { type: 'string', enum: [...CONNECTOR_METHODS] },
    path: {
      type: 'string',
      minLength: 1,
      example: '/repos/{owner}/{repo}/issues',
      description:
        'literal segments and whole {param} segments. A path two templates of one method match runs the more specific ' +
        '(literal segments before parameters: /items/export before /items/{id}, in any order); two that a path matches ' +
        'with neither more specific (/a/{x}/c and /a/b/{y}) are refused',
    },
    risk: { type: 'string', enum: [...OPERATION_RISKS] },
    constraints: constraintMap(HTTP_CONSTRAINT_SCHEMA, { amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 1000000 } }),
    request_headers: REQUEST_HEADERS_SCHEMA,
  } satisfies Record<keyof ConnectorOperationDefinition, ConnectorJsonSchema>,
  ['name', 'method', 'path', 'risk'],
  { description: 'an operation of an http connector' },
);

/** One operation of an `mcp` connector: a tool, with no method or path. */
export const TOOL_OPERATION_SCHEMA = object(
  {
    name: string(TOOL_NAME_PATTERN, 128, { example: 'create_issue' }),
    risk: { type: 'string', enum: [...OPERATION_RISKS] },
    constraints: constraintMap(TOOL_CONSTRAINT_SCHEMA, { repo: { in: 'arguments', field: 'repo', op: 'eq' } }),
    request_headers: REQUEST_HEADERS_SCHEMA,
  } satisfies Record<Exclude<keyof ConnectorOperationDefinition, 'method' | 'path'>, ConnectorJsonSchema>,
  ['name', 'risk'],
  { description: 'a tool of an mcp connector' },
);

/** An operation of either kind (the connector's `kind` decides which one it must be). */
export const CONNECTOR_OPERATION_SCHEMA: ConnectorJsonSchema = { oneOf: [HTTP_OPERATION_SCHEMA, TOOL_OPERATION_SCHEMA] };

const secret = (pattern: RegExp, extra: ConnectorJsonSchema = {}): ConnectorJsonSchema =>
  string(pattern, CONNECTOR_LIMITS.secret, { writeOnly: true, ...extra });
const clientId = (): ConnectorJsonSchema => string(PRINTABLE_ASCII, CONNECTOR_LIMITS.clientId);
const credentialType = <T extends UpstreamCredential['type']>(type: T): ConnectorJsonSchema => ({ type: 'string', enum: [type] });

/** Each credential type's members (`type` included); the validator accepts exactly these. */
export const CREDENTIAL_SCHEMAS: { [T in UpstreamCredential['type']]: ConnectorObjectSchema } = {
  bearer: object(
    { type: credentialType('bearer'), token: secret(VISIBLE_ASCII) } satisfies Record<
      keyof Extract<UpstreamCredential, { type: 'bearer' }>,
      ConnectorJsonSchema
    >,
    ['type', 'token'],
  ),
  header: object(
    {
      type: credentialType('header'),
      name: string(HEADER_NAME_PATTERN, CONNECTOR_LIMITS.headerName, { example: 'X-Api-Key' }),
      value: secret(HEADER_VALUE),
    } satisfies Record<keyof Extract<UpstreamCredential, { type: 'header' }>, ConnectorJsonSchema>,
    ['type', 'name', 'value'],
  ),
  oauth2_client_credentials: object(
    {
      type: credentialType('oauth2_client_credentials'),
      token_url: url(),
      client_id: clientId(),
      client_secret: secret(PRINTABLE_ASCII),
      scope: { type: 'string', maxLength: CONNECTOR_LIMITS.scope, pattern: SCOPE.source },
    } satisfies Record<keyof Extract<UpstreamCredential, { type: 'oauth2_client_credentials' }>, ConnectorJsonSchema>,
    ['type', 'token_url', 'client_id', 'client_secret'],
  ),
  oauth2_authorization_code: object(
    {
      type: credentialType('oauth2_authorization_code'),
      authorization_url: url({ description: 'may carry a query' }),
      token_url: url(),
      client_id: clientId(),
      client_secret: secret(PRINTABLE_ASCII, { description: 'or private_key_jwt, exactly one' }),
      private_key_jwt: object(
        {
          jwk: {
            type: 'object',
            required: ['kty', 'd'],
            properties: { kty: { type: 'string', enum: ['EC', 'OKP', 'RSA'] }, d: { type: 'string', minLength: 1, maxLength: CONNECTOR_LIMITS.secret } },
            description: 'a private JWK (with d) of type EC P-256/P-384, OKP Ed25519 or RSA',
          },
        },
        ['jwk'],
        { writeOnly: true, description: 'or client_secret, exactly one' },
      ),
      scopes: { type: 'array', maxItems: CONNECTOR_LIMITS.scopes, items: { type: 'string', pattern: SCOPE_TOKEN.source } },
      revocation_url: url(),
      issuer: url({ description: "the provider's issuer: the RFC 9207 iss of the authorization response must equal it" }),
    } satisfies Record<keyof Extract<UpstreamCredential, { type: 'oauth2_authorization_code' }>, ConnectorJsonSchema>,
    ['type', 'authorization_url', 'token_url', 'client_id', 'scopes'],
    { description: "per-user connected accounts (docs/connected-accounts.md): the gateway injects the access token of the task's verified user" },
  ),
};

/** Every credential type, one of them. */
export const UPSTREAM_CREDENTIAL_SCHEMA: ConnectorJsonSchema = {
  description:
    'write-only upstream credential, sealed bound to the connector id and the origin of base_url; reads show only its type and fingerprint. ' +
    'A header credential may not be named Authorization, Host, Cookie, Content-Type, Content-Length, Transfer-Encoding, Expect, DPoP, ' +
    'a hop-by-hop, method-override, Forwarded, X-Forwarded-* or client-IP header. token_url follows the same destination rules as base_url.',
  oneOf: CREDENTIAL_TYPES.map((type) => CREDENTIAL_SCHEMAS[type]),
};

const name = (): ConnectorJsonSchema => ({ type: 'string', minLength: 1, maxLength: CONNECTOR_LIMITS.name, example: 'Payments' });
const baseUrl = (description: string): ConnectorJsonSchema => url({ example: 'https://api.payments.example', description });
const operations = (description: string): ConnectorJsonSchema => ({
  type: 'array',
  minItems: 1,
  maxItems: CONNECTOR_LIMITS.operations,
  items: CONNECTOR_OPERATION_SCHEMA,
  description,
});

/** `POST /v1/connectors`. */
export const CREATE_CONNECTOR_SCHEMA = object(
  {
    id: string(CONNECTOR_ID_PATTERN, 64, { example: 'payments' }),
    kind: {
      type: 'string',
      enum: [...CONNECTOR_KINDS],
      default: 'http',
      description:
        'http: an HTTP API; mcp: a Streamable HTTP MCP server at base_url, whose operations are tools {name, risk, constraints} ' +
        'with constraints on arguments ({"in": "arguments", "field": "<dotted path>"}). Fixed at creation.',
    },
    name: name(),
    base_url: baseUrl(
      'absolute http(s), no userinfo, query or fragment; its host (every address it resolves to) must be public or inside ' +
        'WRIT_UPSTREAM_ALLOWED_NETWORKS, and never link-local or a metadata address',
    ),
    operations: operations(
      'an http connector takes operations {name, method, path, risk, constraints, request_headers}; an mcp connector takes tools {name, risk, constraints, request_headers}',
    ),
    credential: UPSTREAM_CREDENTIAL_SCHEMA,
  } satisfies Record<keyof ConnectorDefinition, ConnectorJsonSchema>,
  ['id', 'name', 'base_url', 'operations'],
);

/**
 * `PATCH /v1/connectors/{id}`: only the members given change; a credential given is a
 * rotation, `null` removes it. A new `base_url` needs `credential` in the same request.
 */
export const UPDATE_CONNECTOR_SCHEMA = object(
  {
    name: name(),
    base_url: baseUrl('a new destination: the credential must be given again in the same request (or set to null)'),
    operations: operations(
      'replaces the whole catalogue; credentials issued for an operation whose method, path, constraints or request_headers change, or that is removed, are revoked',
    ),
    credential: { ...UPSTREAM_CREDENTIAL_SCHEMA, nullable: true, description: `${UPSTREAM_CREDENTIAL_SCHEMA.description} null removes it.` },
  } satisfies Record<keyof ConnectorDefinitionPatch, ConnectorJsonSchema>,
  [],
);
