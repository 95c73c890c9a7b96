import { ApiProperty, ApiPropertyOptional, OmitType } from '@nestjs/swagger';
import { ArrayMaxSize, ArrayUnique, IsArray, IsObject, IsOptional, IsString, Length, MaxLength } from 'class-validator';
import { PageQueryDto } from '../common/page-query.dto';

/** `POST /v1/identity-providers`: a trusted issuer of users' tokens. */
export class CreateIdentityProviderDto {
  @ApiProperty({ example: 'https://login.example.com', description: 'the `iss` of its tokens, exactly' })
  @IsString()
  @Length(1, 2048)
  issuer!: string;
  @ApiProperty({
    example: 'https://login.example.com/.well-known/jwks.json',
    description: 'its public keys; follows the same destination rules as a connector base_url',
  })
  @IsString()
  @Length(1, 2048)
  jwks_uri!: string;
  @ApiProperty({ example: 'writ', description: 'the `aud` its user tokens must carry' })
  @IsString()
  @Length(1, 1024)
  audience!: string;
  @ApiPropertyOptional({ type: [String], description: 'orchestrators trusted to assert users of this issuer without a token (default none)' })
  @IsOptional()
  @IsArray()
  @ArrayMaxSize(100)
  @ArrayUnique()
  @IsString({ each: true })
  @MaxLength(128, { each: true })
  asserting_orchestrators?: string[];
}

/** A trusted identity provider as the admin API shows it. */
export class IdentityProviderDto {
  @ApiProperty() issuer!: string;
  @ApiProperty() jwks_uri!: string;
  @ApiProperty() audience!: string;
  @ApiProperty({ type: [String] }) asserting_orchestrators!: string[];
  @ApiProperty() created_at!: string;
}

/** `{items, next_cursor}` of identity providers. */
export class IdentityProviderListDto {
  @ApiProperty({ type: [IdentityProviderDto] }) items!: IdentityProviderDto[];
  @ApiProperty({ nullable: true, type: String }) next_cursor!: string | null;
}

/** `GET /v1/identity-providers`: a page by issuer (its cursor carries an issuer, up to 2048 characters). */
export class ListIdentityProvidersQueryDto extends OmitType(PageQueryDto, ['cursor'] as const) {
  @ApiPropertyOptional({ description: 'the `next_cursor` of the previous page (opaque)' })
  @IsOptional()
  @IsString()
  @MaxLength(4096)
  cursor?: string;
}

/** `GET /v1/connections`: filters and page. */
export class ConnectionQueryDto extends PageQueryDto {
  @ApiPropertyOptional() @IsOptional() @IsString() @MaxLength(64) connector_id?: string;
  @ApiPropertyOptional({ description: "with user_sub: one user's connections" }) @IsOptional() @IsString() @MaxLength(2048) user_iss?: string;
  @ApiPropertyOptional() @IsOptional() @IsString() @MaxLength(255) user_sub?: string;
}

/** The user a connection belongs to. */
export class ConnectionUserDto {
  @ApiProperty({ description: 'the issuer of the user (a registered identity provider)' }) iss!: string;
  @ApiProperty() sub!: string;
}

/** A user's connected account as the admin API shows it (never a token). */
export class ConnectionDto {
  @ApiProperty({ format: 'uuid' }) id!: string;
  @ApiProperty() connector_id!: string;
  @ApiProperty({ type: ConnectionUserDto }) user!: ConnectionUserDto;
  @ApiProperty({ enum: ['active', 'broken'] }) status!: 'active' | 'broken';
  @ApiProperty({ type: [String] }) scopes!: string[];
  @ApiProperty({ nullable: true, type: String, description: 'why the upstream refused a refresh (status broken)' }) broken_error!: string | null;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) access_expires_at!: string | null;
  @ApiProperty({ format: 'date-time' }) connected_at!: string;
  @ApiProperty({ format: 'date-time', nullable: true, type: String }) refreshed_at!: string | null;
}

/** A page of connections, newest first (`connected_at`, then `id`). */
export class ConnectionListDto {
  @ApiProperty({ type: [ConnectionDto] }) items!: ConnectionDto[];
  @ApiProperty({ nullable: true, type: String, description: 'pass as ?cursor= for the next page; null on the last' }) next_cursor!: string | null;
}

/** `POST /v1/connections/links`: a connect link for a user (the admin vouches for the user). */
export class CreateAdminConnectLinkDto {
  @ApiProperty({ example: 'github' }) @IsString() @Length(1, 64) connector_id!: string;
  @ApiProperty({ example: { iss: 'https://login.example.com', sub: 'user-42' } }) @IsObject() user!: Record<string, unknown>;
}
