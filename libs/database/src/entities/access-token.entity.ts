import { Column, Entity, PrimaryColumn } from 'typeorm';
import type { ConnectorDetail } from './task.entity';

/** Every access token Writ issued: connector credentials and orchestrators' tasks tokens. */
@Entity('access_tokens')
export class AccessTokenEntity {
  @PrimaryColumn('text') jti!: string;
  @Column('text') kind!: 'connector' | 'tasks';
  @Column('text', { name: 'client_id' }) clientId!: string;
  @Column('text') subject!: string;
  @Column('uuid', { name: 'task_id', nullable: true }) taskId!: string | null;
  @Column('text', { name: 'connector_id', nullable: true }) connectorId!: string | null;
  @Column('text', { nullable: true }) action!: string | null;
  @Column('text', { nullable: true }) risk!: string | null;
  @Column('jsonb', { name: 'authorization_details', nullable: true }) authorizationDetails!: ConnectorDetail[] | null;
  @Column('text', { nullable: true }) scope!: string | null;
  @Column('text', { name: 'cnf_jkt', nullable: true }) cnfJkt!: string | null;
  @Column('text', { name: 'policy_version', nullable: true }) policyVersion!: string | null;
  @Column('int', { name: 'max_uses', nullable: true }) maxUses!: number | null;
  @Column('int') uses!: number;
  @Column('timestamptz', { name: 'issued_at' }) issuedAt!: Date;
  @Column('timestamptz', { name: 'expires_at' }) expiresAt!: Date;
  @Column('timestamptz', { name: 'revoked_at', nullable: true }) revokedAt!: Date | null;
  @Column('text', { name: 'revoked_reason', nullable: true }) revokedReason!: string | null;
}
