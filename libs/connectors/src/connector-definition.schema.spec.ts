import Ajv from 'ajv';
import {
  CONNECTOR_LIMITS,
  CREATE_CONNECTOR_SCHEMA,
  CREDENTIAL_SCHEMAS,
  HTTP_OPERATION_SCHEMA,
  TOOL_OPERATION_SCHEMA,
  UPDATE_CONNECTOR_SCHEMA,
} from './connector-definition.schema';
import { CREDENTIAL_TYPES } from './upstream-credential';
import { validateConnectorDefinition, validateConnectorPatch } from './validate-connector-definition';

// The schema (published as the admin API's OpenAPI request bodies) and the validator must
// agree: everything the validator accepts, the schema accepts; everything the schema
// refuses, the validator refuses, at the same field. The validator may refuse more (URL
// destinations, templates, duplicates, couplings a schema cannot state).

const ajv = new Ajv({ strict: true, allErrors: true, validateFormats: false });
ajv.addKeyword({ keyword: 'example' });
const createSchema = ajv.compile(CREATE_CONNECTOR_SCHEMA);
// OpenAPI 3.0's `nullable` on a oneOf cannot be compiled by a JSON Schema validator; the
// rotation and removal forms are checked separately below.
const { credential: _credential, ...patchMembers } = UPDATE_CONNECTOR_SCHEMA.properties;
const patchSchema = ajv.compile({ ...UPDATE_CONNECTOR_SCHEMA, properties: { ...patchMembers, credential: CREATE_CONNECTOR_SCHEMA.properties.credential } });

const http = () => ({
  id: 'payments',
  name: 'Payments',
  base_url: 'https://api.payments.example',
  operations: [
    {
      name: 'payouts.create',
      method: 'POST',
      path: '/v1/payouts',
      risk: 'write',
      constraints: { amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 1000 }, currency: { in: 'body', field: 'currency', op: 'eq' } },
    },
    {
      name: 'repo.issues.list',
      method: 'GET',
      path: '/repos/{owner}/{repo}/issues',
      risk: 'read',
      constraints: { repo: { in: 'path', field: 'repo', op: 'eq' } },
    },
  ] as Array<Record<string, unknown>>,
});

const mcp = () => ({
  id: 'tracker',
  kind: 'mcp',
  name: 'Tracker',
  base_url: 'https://mcp.tracker.example/mcp',
  operations: [{ name: 'create_issue', risk: 'write', constraints: { repo: { in: 'arguments', field: 'repo', op: 'eq' } } }],
});

const credentials: Record<(typeof CREDENTIAL_TYPES)[number], Record<string, unknown>> = {
  bearer: { type: 'bearer', token: 'sk_live_value' },
  header: { type: 'header', name: 'X-Api-Key', value: 'k-1' },
  oauth2_client_credentials: { type: 'oauth2_client_credentials', token_url: 'https://auth.example/token', client_id: 'c', client_secret: 's', scope: 'a b' },
  oauth2_authorization_code: {
    type: 'oauth2_authorization_code',
    authorization_url: 'https://auth.example/authorize?prompt=consent',
    token_url: 'https://auth.example/token',
    revocation_url: 'https://auth.example/revoke',
    issuer: 'https://auth.example',
    client_id: 'c',
    client_secret: 's',
    scopes: ['repo', 'read:user'],
  },
};

function schemaFields(valid: boolean): string[] {
  if (valid) return [];
  return (createSchema.errors ?? []).map((error) => error.instancePath);
}

describe('connector definition schema', () => {
  it('is strict JSON Schema (compiles with ajv in strict mode)', () => {
    expect(typeof createSchema).toBe('function');
    expect(typeof patchSchema).toBe('function');
  });

  it.each<[string, unknown]>([
    ['http', http()],
    ['mcp', mcp()],
    ...CREDENTIAL_TYPES.map((type): [string, unknown] => [`http with a ${type} credential`, { ...http(), credential: credentials[type] }]),
  ])('accepts what the validator accepts: %s', (_label, definition) => {
    expect(validateConnectorDefinition(definition)).toMatchObject({ ok: true });
    expect(schemaFields(createSchema(definition))).toEqual([]);
  });

  it('accepts the patches the validator accepts', () => {
    for (const patch of [{ name: 'New' }, { base_url: 'https://x.example', credential: credentials.bearer }, { operations: http().operations }]) {
      expect(validateConnectorPatch(patch)).toMatchObject({ ok: true });
      expect(patchSchema(patch)).toBe(true);
    }
    expect(validateConnectorPatch({ credential: null })).toMatchObject({ ok: true });
    expect(UPDATE_CONNECTOR_SCHEMA.properties.credential.nullable).toBe(true);
  });

  const withOperation = (change: Record<string, unknown>) => {
    const definition = http();
    definition.operations[0] = { ...definition.operations[0], ...change };
    return definition;
  };
  const withConstraint = (change: Record<string, unknown>) =>
    withOperation({ constraints: { amount_max: { in: 'body', field: 'amount', op: 'lte', ...change } } });

  it.each([
    ['an unknown top-level member', { ...http(), owner: 'x' }, 'owner'],
    ['an id outside the pattern', { ...http(), id: 'Payments' }, 'id'],
    ['an unknown kind', { ...http(), kind: 'grpc' }, 'kind'],
    ['an empty name', { ...http(), name: '' }, 'name'],
    ['a name too long', { ...http(), name: 'n'.repeat(CONNECTOR_LIMITS.name + 1) }, 'name'],
    ['an empty catalogue', { ...http(), operations: [] }, 'operations'],
    ['an unknown method', withOperation({ method: 'TRACE' }), 'operations[0].method'],
    ['an unknown risk', withOperation({ risk: 'admin' }), 'operations[0].risk'],
    ['an operation name outside the pattern', withOperation({ name: '-x' }), 'operations[0].name'],
    ['an unknown operation member', withOperation({ owner: 'x' }), 'operations[0].owner'],
    ['an unknown operator', withConstraint({ op: 'like' }), 'operations[0].constraints.amount_max.op'],
    ['an http constraint on arguments', withConstraint({ in: 'arguments' }), 'operations[0].constraints.amount_max.in'],
    ['a field that is not a dotted path', withConstraint({ field: 'a..b' }), 'operations[0].constraints.amount_max.field'],
    ['a bound beyond 2^53 - 1', withConstraint({ max: 2 ** 60 }), 'operations[0].constraints.amount_max.max'],
    ['an unknown constraint member', withConstraint({ regex: '.*' }), 'operations[0].constraints.amount_max.regex'],
    ['an unknown credential type', { ...http(), credential: { type: 'basic' } }, 'credential.type'],
    ['an unknown credential member', { ...http(), credential: { ...credentials.bearer, extra: 1 } }, 'credential.extra'],
    ['a bearer token with spaces', { ...http(), credential: { type: 'bearer', token: 'a b' } }, 'credential.token'],
    ['a header name outside RFC 9110', { ...http(), credential: { ...credentials.header, name: 'X Key' } }, 'credential.name'],
  ])('refuses, as the validator does, %s', (_label, definition, field) => {
    const outcome = validateConnectorDefinition(definition);
    expect(outcome.ok).toBe(false);
    expect(outcome.ok ? [] : outcome.errors.map((error) => error.field)).toContain(field);
    expect(createSchema(definition)).toBe(false);
  });

  it('refuses, as the validator does, a tool with a method or an argument-less constraint', () => {
    const tool = mcp();
    for (const operation of [
      { ...tool.operations[0], method: 'POST' },
      { ...tool.operations[0], constraints: { repo: { in: 'body', field: 'repo', op: 'eq' } } },
    ]) {
      const definition = { ...tool, operations: [operation] };
      expect(validateConnectorDefinition(definition).ok).toBe(false);
      expect(createSchema(definition)).toBe(false);
    }
  });

  it('names, per credential type, exactly the members of its TypeScript type', () => {
    for (const type of CREDENTIAL_TYPES) {
      const schema = CREDENTIAL_SCHEMAS[type];
      expect(Object.keys(schema.properties).sort()).toEqual(expect.arrayContaining(Object.keys(credentials[type]).sort()));
      expect(schema.properties.type.enum).toEqual([type]);
    }
    expect(Object.keys(HTTP_OPERATION_SCHEMA.properties)).toEqual(['name', 'method', 'path', 'risk', 'constraints', 'request_headers']);
    expect(Object.keys(TOOL_OPERATION_SCHEMA.properties)).toEqual(['name', 'risk', 'constraints', 'request_headers']);
  });
});
