import { applyDecorators, UseFilters, UseGuards, UseInterceptors } from '@nestjs/common';
import {
  ApiBadRequestResponse,
  ApiBearerAuth,
  ApiForbiddenResponse,
  ApiPayloadTooLargeResponse,
  ApiServiceUnavailableResponse,
  ApiTags,
  ApiTooManyRequestsResponse,
  ApiUnauthorizedResponse,
  ApiUnsupportedMediaTypeResponse,
} from '@nestjs/swagger';
import { UnreadQueryInterceptor } from '@writ/platform';
import { PreconditionFailedFilter } from '../common/entity-tag';
import { AdminErrorDto, ProtocolErrorDto, ValidationErrorDto } from '../common/error.dto';
import { AdminAuthErrorFilter } from './admin-auth.filter';
import { AdminTokenGuard } from './admin-token.guard';

/**
 * Marks a controller as part of the admin API: admin token required, roles checked, query
 * members it does not read refused, documented with the answers every endpoint may give (an
 * endpoint documents its own `400` when it has more to say, and the answers only it gives).
 */
export function AdminApi(tag: string): ClassDecorator {
  return applyDecorators(
    ApiTags(tag),
    ApiBearerAuth(),
    ApiBadRequestResponse({
      description: 'an invalid path parameter or query member (named in `fields`), or a body sent to an endpoint that takes none',
      type: ValidationErrorDto,
    }),
    ApiUnauthorizedResponse({ description: 'no admin token, or an unknown or revoked one', type: AdminErrorDto }),
    ApiForbiddenResponse({ description: "the token's role is too low for this operation", type: AdminErrorDto }),
    ApiPayloadTooLargeResponse({ description: 'a body over 1 MiB (8 MB for a policy bundle)', type: ProtocolErrorDto }),
    ApiUnsupportedMediaTypeResponse({
      description: 'a body that is not `application/json` (or, for a policy bundle, not one of its types)',
      type: ProtocolErrorDto,
    }),
    ApiTooManyRequestsResponse({ description: 'too many failed authentications from this address; see `Retry-After`', type: AdminErrorDto }),
    ApiServiceUnavailableResponse({ description: 'the database is unreachable (nothing changed); see `Retry-After`', type: ProtocolErrorDto }),
    UseGuards(AdminTokenGuard),
    UseInterceptors(UnreadQueryInterceptor),
    UseFilters(AdminAuthErrorFilter, PreconditionFailedFilter),
  );
}
