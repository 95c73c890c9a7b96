import { Column, CreateDateColumn, Entity, PrimaryColumn, UpdateDateColumn } from 'typeorm';
import type { JsonWebKeySet } from './json-web-key-set';

/** An OAuth client that acts: authenticates with `private_key_jwt` against its JWKS. */
@Entity('agents')
export class AgentEntity {
  @PrimaryColumn('text') id!: string;
  @Column('text') name!: string;
  @Column('text', { nullable: true }) description!: string | null;
  @Column('text') status!: 'active' | 'suspended';
  @Column('jsonb') jwks!: JsonWebKeySet;
  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' }) createdAt!: Date;
  @UpdateDateColumn({ type: 'timestamptz', name: 'updated_at' }) updatedAt!: Date;
}
