import { Column, Entity, PrimaryColumn } from 'typeorm';

/** A policy bundle known to the cluster; at most one is active. */
@Entity('policies')
export class PolicyEntity {
  @PrimaryColumn('text') version!: string;
  @Column('bytea') bundle!: Buffer;
  @Column('jsonb', { nullable: true }) data!: Record<string, unknown> | null;
  @Column('text') source!: string;
  @Column('text', { name: 'loaded_by' }) loadedBy!: string;
  @Column('timestamptz', { name: 'loaded_at' }) loadedAt!: Date;
  @Column('boolean') active!: boolean;
}
