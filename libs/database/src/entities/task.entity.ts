import type { ConnectorAuthorizationDetail } from '@writ/oauth';
import { Column, Entity, PrimaryColumn } from 'typeorm';

/** The lifecycle states of a task. Every state but `active` is final. */
export type TaskStatus = 'active' | 'completed' | 'failed' | 'expired' | 'revoked';

/** One `authorization_details` entry of type `connector`, as declared or requested (the type of `@writ/oauth`). */
export type ConnectorDetail = ConnectorAuthorizationDetail;

/** A unit of agent work declared by an orchestrator, with its declared purpose. */
@Entity('tasks')
export class TaskEntity {
  @PrimaryColumn('uuid') id!: string;
  @Column('text', { name: 'agent_id' }) agentId!: string;
  @Column('text', { name: 'orchestrator_id' }) orchestratorId!: string;
  @Column('text') purpose!: string;
  @Column('jsonb') allowed!: ConnectorDetail[];
  @Column('text', { name: 'on_behalf_of', nullable: true }) onBehalfOf!: string | null;
  @Column('jsonb') metadata!: Record<string, unknown>;
  @Column('text') status!: TaskStatus;
  @Column('text', { name: 'status_reason', nullable: true }) statusReason!: string | null;
  @Column('text', { name: 'task_token_jti' }) taskTokenJti!: string;
  @Column('int') refusals!: number;
  @Column('int', { name: 'out_of_purpose_requests' }) outOfPurposeRequests!: number;
  @Column('timestamptz', { name: 'created_at' }) createdAt!: Date;
  @Column('timestamptz', { name: 'expires_at' }) expiresAt!: Date;
  @Column('timestamptz', { name: 'ended_at', nullable: true }) endedAt!: Date | null;
  /** The verified user the task acts for (connected accounts): issuer and subject, or null. */
  @Column('text', { name: 'user_issuer', nullable: true }) userIssuer!: string | null;
  @Column('text', { name: 'user_subject', nullable: true }) userSubject!: string | null;
  /** The declaring request's `Idempotency-Key` and a digest of its body, or null. */
  @Column('text', { name: 'idempotency_key', nullable: true }) idempotencyKey!: string | null;
  @Column('text', { name: 'request_digest', nullable: true }) requestDigest!: string | null;
}
