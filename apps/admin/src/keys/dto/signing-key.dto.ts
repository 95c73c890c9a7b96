import { ApiProperty } from '@nestjs/swagger';

/** A signing key's public facts (never its private part). */
export class SigningKeyDto {
  @ApiProperty({ description: 'JWK thumbprint' }) kid!: string;
  @ApiProperty({ example: 'ES256' }) alg!: string;
  @ApiProperty({
    enum: ['next', 'active', 'retiring', 'retired'],
    description: 'next is published and signs after the next rotation; active signs; retiring still verifies; retired is gone from the JWKS',
  })
  status!: string;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) retired_at!: string | null;
}

/** A page of signing keys, newest first. */
export class SigningKeyListDto {
  @ApiProperty({ type: [SigningKeyDto] }) items!: SigningKeyDto[];
  @ApiProperty({ nullable: true, type: String, description: '`?cursor=` for the next page; null on the last one' }) next_cursor!: string | null;
}

/** The answer to a rotation. */
export class RotatedKeyDto {
  @ApiProperty({ description: 'the new active key' }) kid!: string;
}
