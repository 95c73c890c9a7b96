import { applyDecorators, Delete, Get, HttpCode, Patch, Post, Type } from '@nestjs/common';
import { ApiBadRequestResponse, ApiConflictResponse, ApiCreatedResponse, ApiNoContentResponse, ApiNotFoundResponse, ApiOkResponse } from '@nestjs/swagger';
import type { AdminRole } from '../auth/admin-role';
import { RequireRole } from '../auth/require-role.decorator';
import { AdminErrorDto, ValidationErrorDto } from './error.dto';

/** `POST` of a resource (`role`, operator by default): `201` with it, `400` field errors, `409` taken id. */
export function CreateEndpoint(type: Type<unknown>, conflict = 'the id is taken', role: AdminRole = 'operator'): MethodDecorator {
  return applyDecorators(
    Post(),
    RequireRole(role),
    ApiCreatedResponse({ type }),
    ApiBadRequestResponse({ type: ValidationErrorDto }),
    ApiConflictResponse({ type: AdminErrorDto, description: conflict }),
  );
}

/** `GET` of a list (viewer). */
export function ListEndpoint(type: Type<unknown>): MethodDecorator {
  return applyDecorators(Get(), ApiOkResponse({ type }));
}

/** `GET /:id` (viewer): `404` when unknown. */
export function ReadEndpoint(type: Type<unknown>): MethodDecorator {
  return applyDecorators(Get(':id'), ApiOkResponse({ type }), ApiNotFoundResponse({ type: AdminErrorDto }));
}

/** `PATCH /:id` (operator): `400` field errors, `404` when unknown. */
export function UpdateEndpoint(type: Type<unknown>): MethodDecorator {
  return applyDecorators(
    Patch(':id'),
    RequireRole('operator'),
    ApiOkResponse({ type }),
    ApiBadRequestResponse({ type: ValidationErrorDto }),
    ApiNotFoundResponse({ type: AdminErrorDto }),
  );
}

/** `DELETE /:id` (`role`, operator by default): `204`, `404` when unknown. */
export function RemoveEndpoint(role: AdminRole = 'operator'): MethodDecorator {
  return applyDecorators(Delete(':id'), HttpCode(204), RequireRole(role), ApiNoContentResponse(), ApiNotFoundResponse({ type: AdminErrorDto }));
}
