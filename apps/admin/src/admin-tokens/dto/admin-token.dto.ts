import type { AdminTokenEntity, RowOf } from '@writ/database';
import { ApiProperty } from '@nestjs/swagger';
import { ADMIN_ROLES, AdminRole } from '../../auth/admin-role';

/** An admin token as listed: never the token, never its hash. */
export class AdminTokenDto {
  @ApiProperty({ format: 'uuid' }) id!: string;
  @ApiProperty() name!: string;
  @ApiProperty({ enum: ADMIN_ROLES }) role!: AdminRole;
  @ApiProperty({ nullable: true, type: String, description: 'id of the admin token that created it, or "system"' }) created_by!: string | null;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) last_used_at!: string | null;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) revoked_at!: string | null;
  @ApiProperty({ format: 'date-time', nullable: true, type: String, description: 'when it stops working; null: until revoked' }) expires_at!: string | null;
}

/** `GET /v1/admin-tokens/self`: the token a request is made with (never the token itself). */
export class AdminSelfDto {
  @ApiProperty({ format: 'uuid' }) id!: string;
  @ApiProperty() name!: string;
  @ApiProperty({ enum: ADMIN_ROLES }) role!: AdminRole;
}

/** The answer to `POST /v1/admin-tokens`: the token is shown this once. */
export class CreatedAdminTokenDto {
  @ApiProperty({ format: 'uuid' }) id!: string;
  @ApiProperty() name!: string;
  @ApiProperty({ enum: ADMIN_ROLES }) role!: AdminRole;
  @ApiProperty({
    required: false,
    description:
      'the bearer token; shown once, stored only as its SHA-256. Absent from a replay under an Idempotency-Key (`Idempotent-Replayed: true`): revoke that id and create another if the first answer was lost',
    example: 'writ_admin_…',
  })
  token!: string;
  @ApiProperty({ format: 'date-time' }) created_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String, description: 'when it stops working; null: until revoked' }) expires_at!: string | null;
}

/** A page of admin tokens. */
export class AdminTokenListDto {
  @ApiProperty({ type: [AdminTokenDto] }) items!: AdminTokenDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}

/** Maps an `admin_tokens` row (its hash is never selected). */
export function toAdminTokenDto(row: Omit<RowOf<AdminTokenEntity>, 'token_hash'>): AdminTokenDto {
  const iso = (value: Date | null) => (value ? value.toISOString() : null);
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    created_by: row.created_by ?? null,
    created_at: row.created_at.toISOString(),
    last_used_at: iso(row.last_used_at),
    revoked_at: iso(row.revoked_at),
    expires_at: iso(row.expires_at),
  };
}
