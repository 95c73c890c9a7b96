import { ArrayMaxSize, ArrayMinSize, IsArray, IsInt, IsObject, IsOptional, IsString, Length, Max, Min, ValidateIf } from 'class-validator';

/** Like `@IsOptional()`, for an absent member only: a `null` proof of a user is refused, naming the member. */
export const OptionalNotNull = (): PropertyDecorator => ValidateIf((_object, value) => value !== undefined);

/** Longest task a orchestrator may declare: one day. */
export const MAX_TASK_TTL_SECONDS = 86_400;

/** `POST /v1/tasks`: a task and its declared purpose. */
export class CreateTaskDto {
  /** The agent that will act. */
  @IsString() @Length(1, 128) agent_id!: string;
  /** What the task is for, in words: shown to policies and in the audit trail. */
  @IsString() @Length(1, 2000) purpose!: string;
  /** The declared purpose as `authorization_details` entries (RFC 9396, type `connector`). */
  @IsArray() @ArrayMinSize(1) @ArrayMaxSize(20) allowed!: unknown[];
  /** Lifetime of the task; its credentials never outlive it. */
  @IsInt() @Min(1) @Max(MAX_TASK_TTL_SECONDS) ttl_seconds!: number;
  /** A label of the user the agent acts for, as the orchestrator says it (not verified: see `user_token`). */
  @IsOptional() @IsString() @Length(1, 256) on_behalf_of?: string;
  /** Proof of the user the task acts for: their token from a trusted identity provider. */
  @OptionalNotNull() @IsString() @Length(1, 8192) user_token?: string;
  /** `{iss, sub}`: the user, asserted by an orchestrator trusted to assert users of that issuer. */
  @OptionalNotNull() @IsObject() user?: Record<string, unknown>;
  /** Free-form labels for the orchestrator (at most 4 KiB of JSON). */
  @IsOptional() @IsObject() metadata?: Record<string, unknown>;
}
