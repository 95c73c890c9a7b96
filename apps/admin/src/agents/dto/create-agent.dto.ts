import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsObject, IsOptional, IsString, Length, Matches, MaxLength } from 'class-validator';
import { CLIENT_ID_MESSAGE, CLIENT_ID_PATTERN, JWKS_EXAMPLE } from '../../common/client-identity';

/** `POST /v1/agents`. */
export class CreateAgentDto {
  @ApiPropertyOptional({ pattern: CLIENT_ID_PATTERN.source, description: 'generated when absent', example: 'invoice-agent' })
  @IsOptional()
  @IsString()
  @Matches(CLIENT_ID_PATTERN, { message: CLIENT_ID_MESSAGE })
  id?: string;

  @ApiProperty({ example: 'Invoice agent', maxLength: 200 })
  @IsString()
  @Length(1, 200)
  name!: string;

  @ApiPropertyOptional({ maxLength: 2000, nullable: true })
  @IsOptional()
  @IsString()
  @MaxLength(2000)
  description?: string | null;

  @ApiProperty({ description: 'public keys only (EC, RSA >= 2048, Ed25519); private members are refused', example: JWKS_EXAMPLE })
  @IsObject()
  jwks!: Record<string, unknown>;
}
