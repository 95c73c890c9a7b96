import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { IsIn, IsInt, IsOptional, IsString, Length, Max, Min } from 'class-validator';
import { IsDisplayName } from '@writ/platform';
import { ADMIN_ROLES, AdminRole } from '../../auth/admin-role';

/** Shortest and longest `expires_in` of a new admin token: a minute, and a year. */
export const ADMIN_TOKEN_MIN_SECONDS = 60;
export const ADMIN_TOKEN_MAX_SECONDS = 365 * 24 * 3600;

/** `POST /v1/admin-tokens`. */
export class CreateAdminTokenDto {
  @ApiProperty({ example: 'ci-deployer', maxLength: 100 })
  @IsString()
  @Length(1, 100)
  @IsDisplayName()
  name!: string;

  @ApiProperty({ enum: ADMIN_ROLES })
  @IsIn(ADMIN_ROLES)
  role!: AdminRole;

  @ApiPropertyOptional({
    minimum: ADMIN_TOKEN_MIN_SECONDS,
    maximum: ADMIN_TOKEN_MAX_SECONDS,
    description: 'seconds until the token stops working (a minute to a year); absent: until it is revoked',
    example: 86400,
  })
  @IsOptional()
  @IsInt()
  @Min(ADMIN_TOKEN_MIN_SECONDS)
  @Max(ADMIN_TOKEN_MAX_SECONDS)
  expires_in?: number;
}
