import { Column, Entity, PrimaryColumn } from 'typeorm';

/** A token-signing key; its private part is sealed with the master key. */
@Entity('signing_keys')
export class SigningKeyEntity {
  @PrimaryColumn('text') kid!: string;
  @Column('text') alg!: string;
  @Column('jsonb', { name: 'public_jwk' }) publicJwk!: Record<string, unknown>;
  @Column('bytea', { name: 'private_sealed' }) privateSealed!: Buffer;
  @Column('text') status!: 'next' | 'active' | 'retiring' | 'retired';
  @Column('timestamptz', { name: 'created_at' }) createdAt!: Date;
  @Column('timestamptz', { name: 'retired_at', nullable: true }) retiredAt!: Date | null;
}
