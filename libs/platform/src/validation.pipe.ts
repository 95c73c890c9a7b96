import { ArgumentMetadata, ValidationError, ValidationPipe } from '@nestjs/common';
import { FieldError, ValidationFailedError } from './http-exception.filter';
import { requestTextProblem } from './request-values';

function flatten(errors: ValidationError[], prefix = ''): FieldError[] {
  return errors.flatMap((error) => {
    const field = prefix ? (/^\d+$/.test(error.property) ? `${prefix}[${error.property}]` : `${prefix}.${error.property}`) : error.property;
    const own = Object.values(error.constraints ?? {}).map((message) => ({
      field,
      message: message.startsWith('property ') ? 'unknown field' : message,
    }));
    return [...own, ...flatten(error.children ?? [], field)];
  });
}

/** Problems of the strings of a route parameter or query value (arrays for repeated query parameters). */
function textProblems(value: unknown, field: string, out: FieldError[]): void {
  if (typeof value === 'string') {
    const message = requestTextProblem(value);
    if (message) out.push({ field: field.replace(/[^\x20-\x7e]/g, '?').slice(0, 64), message });
  } else if (Array.isArray(value)) {
    value.forEach((element) => textProblems(element, field, out));
  } else if (value !== null && typeof value === 'object') {
    for (const [name, member] of Object.entries(value)) textProblems(member, name, out);
  }
}

/**
 * Validation of bodies, queries and route parameters: DTO classes with class-validator, unknown
 * fields refused (never silently dropped), every problem reported by field; and, before that,
 * route parameters and query values holding control characters (NUL) or lone surrogates are
 * a `400` naming the parameter, so they never reach a PostgreSQL query.
 */
class WritValidationPipe extends ValidationPipe {
  override async transform(value: unknown, metadata: ArgumentMetadata): Promise<unknown> {
    if (metadata.type !== 'param' && metadata.type !== 'query') return super.transform(value, metadata);
    const message = `the ${metadata.type === 'param' ? 'path' : 'query'} is invalid`;
    const problems: FieldError[] = [];
    textProblems(value, metadata.data ?? metadata.type, problems);
    if (problems.length > 0) throw new ValidationFailedError(problems, message);
    try {
      return await super.transform(value, metadata);
    } catch (error) {
      // The factory below cannot tell a query from a body: say which part of the request is at fault.
      if (error instanceof ValidationFailedError) throw new ValidationFailedError(error.fields, message);
      throw error;
    }
  }
}

/** The global pipe of the admin API and the Tasks API (see {@link WritValidationPipe}). */
export function writValidationPipe(): ValidationPipe {
  return new WritValidationPipe({
    whitelist: true,
    forbidNonWhitelisted: true,
    transform: true,
    validationError: { target: false, value: false },
    exceptionFactory: (errors) => new ValidationFailedError(flatten(errors)),
  });
}
