import { ApiProperty } from '@nestjs/swagger';

/** The Ed25519 public key (JWK) that verifies audit checkpoints. */
export class CheckpointPublicKeyDto {
  @ApiProperty({ example: 'OKP' }) kty!: 'OKP';
  @ApiProperty({ example: 'Ed25519' }) crv!: 'Ed25519';
  @ApiProperty({ description: 'public key, base64url' }) x!: string;
  @ApiProperty({ description: 'RFC 7638 thumbprint' }) kid!: string;
  @ApiProperty({ example: 'EdDSA' }) alg!: 'EdDSA';
  @ApiProperty({ example: 'sig' }) use!: 'sig';
}

/** A signed checkpoint of the audit chain head, as stored and as written to the checkpoint file. */
export class AuditCheckpointDto {
  @ApiProperty({ example: 1, description: 'format version' }) v!: number;
  @ApiProperty({ description: 'last event covered' }) seq!: number;
  @ApiProperty({ description: 'the chain hash at seq' }) hash!: string;
  @ApiProperty({ nullable: true, type: String, description: 'SHA-256 of the previous checkpoint (JCS of its body, then its sig)' }) prev!: string | null;
  @ApiProperty({ format: 'date-time' }) time!: string;
  @ApiProperty() kid!: string;
  @ApiProperty({ description: 'Ed25519 signature (base64url) of the JCS of every other member' }) sig!: string;
}

/** `GET /v1/audit/checkpoints`: the verification key and the checkpoints, newest first. */
export class AuditCheckpointPageDto {
  @ApiProperty({ type: CheckpointPublicKeyDto, description: 'the key that signs new checkpoints (derived from WRIT_MASTER_KEY)' })
  public_key!: CheckpointPublicKeyDto;
  @ApiProperty({
    type: [CheckpointPublicKeyDto],
    description:
      'keys of WRIT_MASTER_KEY_PREVIOUS, then of WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS, which verify checkpoints signed before a master key rotation (empty without)',
  })
  previous_public_keys!: CheckpointPublicKeyDto[];
  @ApiProperty({ type: [AuditCheckpointDto] }) items!: AuditCheckpointDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}
