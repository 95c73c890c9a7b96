import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { ConstraintOperator } from '@writ/oauth';

/** Where a constraint reads its value in a request. */
export type ConstraintLocation = 'path' | 'query' | 'body' | 'header' | 'arguments';

/** Binds a constraint name to one request field and an operator. */
export interface ConstraintBinding {
  in: ConstraintLocation;
  field: string;
  op: ConstraintOperator;
  /** Catalogue bounds on the request value, enforced whatever the grant says. */
  min?: number;
  max?: number;
}

/** One operation of a connector's catalogue. */
export interface ConnectorOperation {
  name: string;
  method: string;
  path: string;
  risk: 'read' | 'write';
  constraints: Record<string, ConstraintBinding>;
  /** When present, the only request headers (beside the gateway's safe set and the header constraints') the agent may send. */
  request_headers?: string[];
}

/** An upstream API, its catalogue and its sealed upstream credential. */
@Entity('connectors')
export class ConnectorEntity {
  @PrimaryColumn('text') id!: string;
  /** `http` or `mcp` (operations are MCP tools); fixed at creation. */
  @Column('text', { default: 'http' }) kind!: 'http' | 'mcp';
  @Column('text') name!: string;
  @Column('text', { name: 'base_url' }) baseUrl!: string;
  @Column('jsonb') operations!: ConnectorOperation[];
  @Column('text', { name: 'credential_type', nullable: true }) credentialType!: string | null;
  @Column('bytea', { name: 'credential_sealed', nullable: true }) credentialSealed!: Buffer | null;
  @Column('text', { name: 'credential_fingerprint', nullable: true }) credentialFingerprint!: string | null;
  @Column('timestamptz', { name: 'credential_set_at', nullable: true }) credentialSetAt!: Date | null;
  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' }) createdAt!: Date;
  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' }) updatedAt!: Date;
}
