import { ApiProperty } from '@nestjs/swagger';
import { MAX_FIELD_ERRORS } from '@writ/platform';

/** An error of the admin API (401, 403, 404, 409). */
export class AdminErrorDto {
  @ApiProperty({ example: 'not_found', description: 'stable code: unauthorized, forbidden, not_found, conflict, invalid_request' })
  error!: string;
  @ApiProperty({ example: 'agent not found' })
  message!: string;
}

/** One offending field of a refused body or query. */
export class FieldErrorDto {
  @ApiProperty({ example: 'operations[1].constraints.amount.op' })
  field!: string;
  @ApiProperty({ example: 'must be one of eq, lte, gte, in' })
  message!: string;
}

/** `400`: the body or query is invalid; every offending field is listed (at most 50). */
export class ValidationErrorDto {
  @ApiProperty({ example: 'invalid_request' })
  error!: string;
  @ApiProperty({ example: 'the request body is invalid' })
  message!: string;
  @ApiProperty({
    type: [FieldErrorDto],
    maxItems: MAX_FIELD_ERRORS,
    description: 'every problem found, in the order of the request, at most 50; a body that is not JSON is one entry, `body`',
  })
  fields!: FieldErrorDto[];
}

/** An error answered before a handler runs (another `Host`, body too large, wrong content type) or when the database is down. */
export class ProtocolErrorDto {
  @ApiProperty({ example: 'temporarily_unavailable', description: 'invalid_request, misdirected_request, temporarily_unavailable' })
  error!: string;
  @ApiProperty({ example: 'the service cannot record this request right now; retry later' })
  error_description!: string;
}
