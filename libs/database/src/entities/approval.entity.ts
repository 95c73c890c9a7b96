import { Column, Entity, PrimaryColumn } from 'typeorm';
import type { ConnectorDetail } from './task.entity';

/** A human approval of a risky grant: asked by the token exchange, decided by an operator. */
@Entity('approvals')
export class ApprovalEntity {
  @PrimaryColumn('uuid') id!: string;
  @Column('uuid', { name: 'task_id' }) taskId!: string;
  @Column('text', { name: 'agent_id' }) agentId!: string;
  @Column('text', { name: 'connector_id' }) connectorId!: string;
  @Column('jsonb', { name: 'authorization_details' }) authorizationDetails!: ConnectorDetail[];
  @Column('jsonb') reasons!: string[];
  @Column('text', { name: 'policy_version' }) policyVersion!: string;
  @Column('text') status!: 'pending' | 'approved' | 'denied' | 'used';
  @Column('timestamptz', { name: 'requested_at' }) requestedAt!: Date;
  @Column('timestamptz', { name: 'expires_at' }) expiresAt!: Date;
  @Column('timestamptz', { name: 'decided_at', nullable: true }) decidedAt!: Date | null;
  @Column('text', { name: 'decided_by', nullable: true }) decidedBy!: string | null;
  @Column('text', { nullable: true }) note!: string | null;
  @Column('timestamptz', { name: 'used_at', nullable: true }) usedAt!: Date | null;
  /** The DPoP key thumbprint the agent asked with (null: none): the only key the approval buys a credential for. */
  @Column('text', { name: 'dpop_jkt', nullable: true }) dpopJkt!: string | null;
}
