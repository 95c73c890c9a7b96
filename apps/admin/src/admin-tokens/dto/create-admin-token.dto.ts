import { ApiProperty } from '@nestjs/swagger';
import { IsIn, IsString, Length } from 'class-validator';
import { IsDisplayName } from '@writ/platform';
import { ADMIN_ROLES, AdminRole } from '../../auth/admin-role';

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
}
