import { ApiPropertyOptional } from '@nestjs/swagger';
import { IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';
import { MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE, QueryInteger } from '@writ/platform';

// Shared with the authorization server's lists (the user's own connections).
export { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, QueryInteger } from '@writ/platform';

/** `?limit=&cursor=` of a list. */
export class PageQueryDto {
  @ApiPropertyOptional({ minimum: 1, maximum: MAX_PAGE_SIZE, default: DEFAULT_PAGE_SIZE, description: 'items per page' })
  @IsOptional()
  @QueryInteger()
  @IsInt()
  @Min(1)
  @Max(MAX_PAGE_SIZE)
  limit?: number;

  @ApiPropertyOptional({ description: 'the `next_cursor` of the previous page (opaque)' })
  @IsOptional()
  @IsString()
  @MaxLength(1024)
  cursor?: string;
}
