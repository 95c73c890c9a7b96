import { IsObject, IsString, Length } from 'class-validator';
import { OptionalNotNull } from '../tasks/dto/create-task.dto';

/** `POST /v1/connections/links`: who connects which connector. */
export class CreateConnectLinkDto {
  /** A connector whose credential type is `oauth2_authorization_code`. */
  @IsString() @Length(1, 64) connector_id!: string;
  /** The user's token from a trusted identity provider (proof of the user). */
  @OptionalNotNull() @IsString() @Length(1, 8192) user_token?: string;
  /** `{iss, sub}`: a user asserted by an orchestrator trusted to assert users of that issuer. */
  @OptionalNotNull() @IsObject() user?: Record<string, unknown>;
}
