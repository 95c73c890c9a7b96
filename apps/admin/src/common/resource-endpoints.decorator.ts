import { applyDecorators, Delete, Get, HttpCode, Patch, Post, Type, UseInterceptors } from '@nestjs/common';
import {
  ApiBadRequestResponse,
  ApiConflictResponse,
  ApiCreatedResponse,
  ApiHeader,
  ApiNoContentResponse,
  ApiNotFoundResponse,
  ApiOkResponse,
  ApiPreconditionFailedResponse,
} from '@nestjs/swagger';
import type { AdminRole } from '../auth/admin-role';
import { RequireRole } from '../auth/require-role.decorator';
import { EntityTagInterceptor } from './entity-tag';
import { IdempotentCreate } from './idempotency';
import { AdminErrorDto, ValidationErrorDto } from './error.dto';

/** The `ETag` header of an answer that carries one resource. */
const ETAG_HEADER = { ETag: { description: 'the entity tag of this version, for `If-Match` on a later PATCH or DELETE', schema: { type: 'string' } } };

/**
 * A change guarded by `If-Match` (lost-update protection): optional; when given, the change
 * applies only if the resource is still the version read (else `412`, nothing changed).
 */
export function ConditionalChange(): MethodDecorator {
  return applyDecorators(
    ApiHeader({
      name: 'If-Match',
      required: false,
      description: 'the ETag of the version the change is based on (or `*`); another version is a 412 and nothing changes',
    }),
    ApiPreconditionFailedResponse({ type: AdminErrorDto, description: 'the resource changed since the version named in If-Match' }),
  );
}

/**
 * `POST` of a resource (`role`, operator by default): `201` with it, `400` field errors, `409` taken
 * id; safe to retry with an `Idempotency-Key` (`422` for the key reused for another request).
 */
export function CreateEndpoint(type: Type<unknown>, conflict = 'the id is taken', role: AdminRole = 'operator'): MethodDecorator {
  return applyDecorators(
    Post(),
    RequireRole(role),
    UseInterceptors(EntityTagInterceptor),
    ApiCreatedResponse({ type, headers: ETAG_HEADER }),
    ApiBadRequestResponse({ type: ValidationErrorDto }),
    ApiConflictResponse({ type: AdminErrorDto, description: conflict }),
    IdempotentCreate(),
  );
}

/** `GET` of a list (viewer). */
export function ListEndpoint(type: Type<unknown>): MethodDecorator {
  return applyDecorators(Get(), ApiOkResponse({ type }));
}

/** `GET /:id` (viewer): `404` when unknown. */
export function ReadEndpoint(type: Type<unknown>): MethodDecorator {
  return applyDecorators(
    Get(':id'),
    UseInterceptors(EntityTagInterceptor),
    ApiOkResponse({ type, headers: ETAG_HEADER }),
    ApiNotFoundResponse({ type: AdminErrorDto }),
  );
}

/** `PATCH /:id` (operator): `400` field errors, `404` when unknown. */
export function UpdateEndpoint(type: Type<unknown>): MethodDecorator {
  return applyDecorators(
    Patch(':id'),
    RequireRole('operator'),
    UseInterceptors(EntityTagInterceptor),
    ApiOkResponse({ type, headers: ETAG_HEADER }),
    ApiBadRequestResponse({ type: ValidationErrorDto }),
    ApiNotFoundResponse({ type: AdminErrorDto }),
  );
}

/** `DELETE /:id` (`role`, operator by default): `204`, `404` when unknown. */
export function RemoveEndpoint(role: AdminRole = 'operator'): MethodDecorator {
  return applyDecorators(Delete(':id'), HttpCode(204), RequireRole(role), ApiNoContentResponse(), ApiNotFoundResponse({ type: AdminErrorDto }));
}
