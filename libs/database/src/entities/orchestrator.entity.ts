import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { JsonWebKeySet } from './json-web-key-set';

/** The trusted service that declares tasks for the agents it lists (or `*`). */
@Entity('orchestrators')
export class OrchestratorEntity {
  @PrimaryColumn('text') id!: string;
  @Column('text') name!: string;
  @Column('text', { nullable: true }) description!: string | null;
  @Column('text') status!: 'active' | 'suspended';
  @Column('jsonb') jwks!: JsonWebKeySet;
  @Column('text', { array: true, name: 'allowed_agents' }) allowedAgents!: string[];
  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' }) createdAt!: Date;
  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' }) updatedAt!: Date;
}
