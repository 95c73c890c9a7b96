import { ApiPropertyOptional } from '@nestjs/swagger';
import { Transform } from 'class-transformer';
import { IsInt, IsOptional, IsString, Max, MaxLength, Min } from 'class-validator';

/** Default page size of the admin lists (the audit list has its own). */
export const DEFAULT_PAGE_SIZE = 50;
/** Largest page of the admin lists (the audit list has its own). */
export const MAX_PAGE_SIZE = 200;

/**
 * A query integer: only plain decimal digits become a number (`Number()` would also read
 * `0x10`, `1e3`, ` 5` or `1e400`); anything else stays a string and fails `@IsInt` with a 400.
 */
export const QueryInteger = (): PropertyDecorator =>
  Transform(({ value }: { value: unknown }) => (typeof value === 'string' && /^[0-9]{1,9}$/.test(value) ? Number(value) : value));

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
