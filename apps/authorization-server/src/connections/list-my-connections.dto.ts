import { IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, QueryInteger } from '@writ/platform';

/** `GET /v1/me/connections`: `?limit=&cursor=`, as the admin API's lists take them. */
export class ListMyConnectionsQueryDto {
  /** Items per page: 1 to {@link MAX_PAGE_SIZE}, {@link DEFAULT_PAGE_SIZE} when absent. */
  @IsOptional()
  @QueryInteger()
  @IsInt()
  @Min(1)
  @Max(MAX_PAGE_SIZE)
  limit?: number;

  /** The `next_cursor` of the previous page (opaque). */
  @IsOptional()
  @IsString()
  @MaxLength(1024)
  cursor?: string;
}
