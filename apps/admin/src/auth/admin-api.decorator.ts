import { applyDecorators, UseFilters, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiForbiddenResponse, ApiTags, ApiUnauthorizedResponse } from '@nestjs/swagger';
import { AdminErrorDto } from '../common/error.dto';
import { AdminAuthErrorFilter } from './admin-auth.filter';
import { AdminTokenGuard } from './admin-token.guard';

/** Marks a controller as part of the admin API: admin token required, roles checked, documented. */
export function AdminApi(tag: string): ClassDecorator {
  return applyDecorators(
    ApiTags(tag),
    ApiBearerAuth(),
    ApiUnauthorizedResponse({ description: 'no admin token, or an unknown or revoked one', type: AdminErrorDto }),
    ApiForbiddenResponse({ description: "the token's role is too low for this operation", type: AdminErrorDto }),
    UseGuards(AdminTokenGuard),
    UseFilters(AdminAuthErrorFilter),
  );
}
