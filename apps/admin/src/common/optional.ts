import { ValidateIf } from 'class-validator';

/**
 * Like `@IsOptional()` but only for an absent member: an explicit `null` is still validated
 * (and refused by the member's other rules), so PATCH cannot null a required column.
 */
export const OptionalNotNull = (): PropertyDecorator => ValidateIf((_object, value) => value !== undefined);
