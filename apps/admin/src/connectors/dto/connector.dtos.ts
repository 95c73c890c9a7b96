import type { ConnectorEntity, RowOf } from '@writ/database';
import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { Allow } from 'class-validator';
import { CONNECTOR_CONSTRAINT_OPERATORS, CONNECTOR_KINDS, CONNECTOR_METHODS, CONSTRAINT_LOCATIONS, CREDENTIAL_TYPES, OPERATION_RISKS } from '@writ/connectors';

// The members below are only declared here (for the unknown-field check and the OpenAPI
// document); their content is validated as a whole by validateConnectorDefinition, which
// reports every problem by its full path (operations[1].constraints.amount.op).

const CONSTRAINT_SCHEMA = {
  type: 'object',
  required: ['in', 'field', 'op'],
  additionalProperties: false,
  properties: {
    in: { type: 'string', enum: [...CONSTRAINT_LOCATIONS] },
    field: { type: 'string', description: 'a name or a dotted path (body)', example: 'amount' },
    op: { type: 'string', enum: [...CONNECTOR_CONSTRAINT_OPERATORS] },
    min: {
      type: 'number',
      example: 0,
      description: 'lowest value the request field may carry, whatever the grant says (the field must then be a number); |value| ≤ 2^53 - 1',
    },
    max: {
      type: 'number',
      example: 1000000,
      description: 'highest value the request field may carry, whatever the grant says (the field must then be a number); not below min',
    },
  },
};

/** One operation of a catalogue (OpenAPI description). */
export class ConnectorOperationDto {
  @ApiProperty({ example: 'payouts.create', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' }) name!: string;
  @ApiPropertyOptional({ enum: CONNECTOR_METHODS, description: 'http connectors only' }) method?: string;
  @ApiPropertyOptional({ example: '/repos/{owner}/{repo}/issues', description: 'http connectors only: literal segments and whole {param} segments' })
  path?: string;
  @ApiProperty({ enum: OPERATION_RISKS }) risk!: string;
  @ApiPropertyOptional({
    type: 'object',
    additionalProperties: CONSTRAINT_SCHEMA,
    description: 'constraint name → the request field it binds and its operator',
    example: { amount_max: { in: 'body', field: 'amount', op: 'lte', min: 0, max: 1000000 } },
  })
  constraints?: Record<string, unknown>;
}

const CREDENTIAL_SCHEMA = {
  description:
    'write-only upstream credential, sealed bound to the connector id and the origin of base_url; reads show only its type and fingerprint. ' +
    'A header credential may not be named Authorization, Host, Cookie, Content-Type, Content-Length, Transfer-Encoding, Expect, DPoP, ' +
    'a hop-by-hop, method-override, Forwarded, X-Forwarded-* or client-IP header. token_url follows the same destination rules as base_url.',
  oneOf: [
    { type: 'object', required: ['type', 'token'], properties: { type: { enum: ['bearer'] }, token: { type: 'string', writeOnly: true } } },
    {
      type: 'object',
      required: ['type', 'name', 'value'],
      properties: { type: { enum: ['header'] }, name: { type: 'string', example: 'X-Api-Key' }, value: { type: 'string', writeOnly: true } },
    },
    {
      type: 'object',
      required: ['type', 'token_url', 'client_id', 'client_secret'],
      properties: {
        type: { enum: ['oauth2_client_credentials'] },
        token_url: { type: 'string', format: 'uri' },
        client_id: { type: 'string' },
        client_secret: { type: 'string', writeOnly: true },
        scope: { type: 'string' },
      },
    },
    {
      type: 'object',
      required: ['type', 'authorization_url', 'token_url', 'client_id', 'scopes'],
      description: "per-user connected accounts (docs/connected-accounts.md): the gateway injects the access token of the task's verified user",
      properties: {
        type: { enum: ['oauth2_authorization_code'] },
        authorization_url: { type: 'string', format: 'uri' },
        token_url: { type: 'string', format: 'uri' },
        revocation_url: { type: 'string', format: 'uri' },
        issuer: { type: 'string', format: 'uri' },
        client_id: { type: 'string' },
        client_secret: { type: 'string', writeOnly: true, description: 'or private_key_jwt, exactly one' },
        private_key_jwt: {
          type: 'object',
          writeOnly: true,
          properties: { jwk: { type: 'object', description: 'a private JWK (EC P-256/P-384, OKP Ed25519, RSA)' } },
        },
        scopes: { type: 'array', items: { type: 'string' } },
      },
    },
  ],
} as const;

/** `POST /v1/connectors`. */
export class CreateConnectorDto {
  @ApiProperty({ example: 'payments', pattern: '^[a-z0-9][a-z0-9_.-]{0,63}$' }) @Allow() id!: string;
  @ApiPropertyOptional({
    enum: CONNECTOR_KINDS,
    default: 'http',
    description:
      'http: an HTTP API; mcp: a Streamable HTTP MCP server at base_url, whose operations are tools {name, risk, constraints} ' +
      'with constraints on arguments ({"in": "arguments", "field": "<dotted path>"}). Fixed at creation.',
  })
  @Allow()
  kind?: string;
  @ApiProperty({ example: 'Payments' }) @Allow() name!: string;
  @ApiProperty({
    example: 'https://api.payments.example',
    description:
      'absolute http(s), no userinfo, query or fragment; its host (every address it resolves to) must be public or inside ' +
      'WRIT_UPSTREAM_ALLOWED_NETWORKS, and never link-local or a metadata address',
  })
  @Allow()
  base_url!: string;
  @ApiProperty({ type: [ConnectorOperationDto] }) @Allow() operations!: unknown[];
  @ApiPropertyOptional(CREDENTIAL_SCHEMA as never) @Allow() credential?: Record<string, unknown>;
}

/**
 * `PATCH /v1/connectors/{id}`: only the members given change; a credential given is a
 * rotation, `null` removes it. A new `base_url` needs `credential` in the same request.
 */
export class UpdateConnectorDto {
  @ApiPropertyOptional() @Allow() name?: string;
  @ApiPropertyOptional({ description: 'a new destination: the credential must be given again in the same request (or set to null)' })
  @Allow()
  base_url?: string;
  @ApiPropertyOptional({
    type: [ConnectorOperationDto],
    description: 'replaces the whole catalogue; credentials issued for an operation whose method, path or constraints change, or that is removed, are revoked',
  })
  @Allow()
  operations?: unknown[];
  @ApiPropertyOptional({ ...CREDENTIAL_SCHEMA, nullable: true, description: `${CREDENTIAL_SCHEMA.description} null removes it.` } as never)
  @Allow()
  credential?: Record<string, unknown> | null;
}

/** What reads show of a credential: never its value. */
export class CredentialInfoDto {
  @ApiProperty({ enum: CREDENTIAL_TYPES }) type!: string;
  @ApiProperty({ example: 'hmac-sha256:1a2b3c4d5e6f7081', description: 'keyed fingerprint: compare, never recover' }) fingerprint!: string;
  @ApiProperty({ format: 'date-time' }) set_at!: string;
}

/** A connector as the admin API shows it. */
export class ConnectorDto {
  @ApiProperty() id!: string;
  @ApiProperty({ enum: CONNECTOR_KINDS }) kind!: string;
  @ApiProperty() name!: string;
  @ApiProperty() base_url!: string;
  @ApiProperty({ type: [ConnectorOperationDto] }) operations!: unknown[];
  @ApiProperty({ type: CredentialInfoDto, nullable: true }) credential!: CredentialInfoDto | null;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time' }) updated_at!: string;
}

/** A page of connectors. */
export class ConnectorListDto {
  @ApiProperty({ type: [ConnectorDto] }) items!: ConnectorDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}

/** Maps a `connectors` row (its sealed credential is never selected). */
export function toConnectorDto(row: Omit<RowOf<ConnectorEntity>, 'credential_sealed'>): ConnectorDto {
  return {
    id: row.id,
    kind: row.kind,
    name: row.name,
    base_url: row.base_url,
    operations: row.operations,
    credential: row.credential_type
      ? { type: row.credential_type, fingerprint: row.credential_fingerprint ?? '', set_at: row.credential_set_at?.toISOString() ?? '' }
      : null,
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}
