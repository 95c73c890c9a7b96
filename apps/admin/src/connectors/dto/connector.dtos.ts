import type { ConnectorEntity, RowOf } from '@writ/database';
import { ApiProperty, type ApiPropertyOptions } from '@nestjs/swagger';
import { Allow } from 'class-validator';
import {
  CONNECTOR_KINDS,
  CONNECTOR_OPERATION_SCHEMA,
  CREATE_CONNECTOR_SCHEMA,
  CREDENTIAL_TYPES,
  UPDATE_CONNECTOR_SCHEMA,
  type ConnectorObjectSchema,
} from '@writ/connectors';

// The request bodies are described by the connector model's own JSON Schema
// (libs/connectors/src/connector-definition.schema.ts), the one validateConnectorDefinition
// takes its members and limits from: the OpenAPI document and the validator cannot drift.
// The members are declared here for the unknown-field check of the validation pipe; their
// content is validated as a whole by validateConnectorDefinition, which reports every
// problem by its full path (operations[1].constraints.amount.op).

/** Documents each member of the class with the property of the same name in `schema`. */
function DescribedBy(schema: ConnectorObjectSchema): ClassDecorator {
  return (target) => {
    for (const [name, property] of Object.entries(schema.properties)) {
      ApiProperty({ ...property, required: schema.required.includes(name) } as ApiPropertyOptions)(target.prototype as object, name);
    }
  };
}

/** `POST /v1/connectors`: {@link CREATE_CONNECTOR_SCHEMA}. */
@DescribedBy(CREATE_CONNECTOR_SCHEMA)
export class CreateConnectorDto {
  @Allow() id!: string;
  @Allow() kind?: string;
  @Allow() name!: string;
  @Allow() base_url!: string;
  @Allow() operations!: unknown[];
  @Allow() credential?: Record<string, unknown>;
}

/** `PATCH /v1/connectors/{id}`: {@link UPDATE_CONNECTOR_SCHEMA}. */
@DescribedBy(UPDATE_CONNECTOR_SCHEMA)
export class UpdateConnectorDto {
  @Allow() name?: string;
  @Allow() base_url?: string;
  @Allow() operations?: unknown[];
  @Allow() credential?: Record<string, unknown> | null;
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
  @ApiProperty({ type: 'array', items: CONNECTOR_OPERATION_SCHEMA }) operations!: unknown[];
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
