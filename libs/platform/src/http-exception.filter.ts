import { ArgumentsHost, Catch, ExceptionFilter, HttpException, HttpStatus } from '@nestjs/common';
import type { Request, Response } from 'express';
import type { Logger } from 'pino';
import { AuditUnavailableError, isConnectionError, isTransientError } from '@writ/audit';
import { OAuthError, wwwAuthenticateFor } from '@writ/oauth';
import { LogRateLimiter } from './log-rate-limiter';
import { loggablePath, requestPath } from './request-values';

/** A field-level validation problem of the admin API. */
export interface FieldError {
  field: string;
  message: string;
}

/**
 * Most entries of a `fields` list: a body with thousands of bad members answers with the first
 * 50 (in the order found), so the answer stays small whatever the body.
 */
export const MAX_FIELD_ERRORS = 50;

/** Thrown by admin endpoints for a refused body: `400 {error, message, fields}` (at most {@link MAX_FIELD_ERRORS} fields). */
export class ValidationFailedError extends Error {
  readonly fields: FieldError[];

  constructor(fields: FieldError[], message = 'the request body is invalid') {
    super(message);
    this.name = 'ValidationFailedError';
    this.fields = fields.slice(0, MAX_FIELD_ERRORS);
  }
}

/** Thrown for a missing resource of the admin or tasks API. */
export class NotFoundError extends Error {
  constructor(what: string) {
    super(`${what} not found`);
    this.name = 'NotFoundError';
  }
}

/** Thrown when a change conflicts with the current state (e.g. a duplicate id). */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

/**
 * Thrown when a request is well formed but cannot be processed as sent: `422 {error, message,
 * fields}` (an `Idempotency-Key` already used for another request, as the IETF draft
 * `draft-ietf-httpapi-idempotency-key-header` answers it).
 */
export class UnprocessableRequestError extends Error {
  constructor(
    readonly fields: FieldError[],
    message: string,
  ) {
    super(message);
    this.name = 'UnprocessableRequestError';
  }
}

function nestErrorCode(status: number): string {
  switch (status) {
    case 400:
      return 'invalid_request';
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 405:
      return 'method_not_allowed';
    case 409:
      return 'conflict';
    case 413:
      return 'invalid_request';
    case 415:
      return 'invalid_request';
    default:
      return status >= 500 ? 'server_error' : 'invalid_request';
  }
}

/**
 * The one place where exceptions become HTTP responses: RFC 6749 JSON with
 * `Cache-Control: no-store` for OAuth errors, `{error, message, fields}` for the admin API,
 * `503 temporarily_unavailable` when the database or the audit log is down, `400` for a value
 * PostgreSQL could not read (a missing check, logged), and never a stack trace. Unknown errors are logged (without request bodies) and answered `500 server_error`.
 */
/** How often, at most, the filter logs one kind of "database unavailable" (with the count it left out). */
export const UNAVAILABLE_LOG_INTERVAL_MS = 10_000;

/** One limiter per logger, so that the filters of one app (Nest's and the direct routes') share it. */
const unavailableLogLimiters = new WeakMap<Logger, LogRateLimiter>();

function unavailableLogLimiter(logger: Logger): LogRateLimiter {
  let limiter = unavailableLogLimiters.get(logger);
  if (!limiter) unavailableLogLimiters.set(logger, (limiter = new LogRateLimiter(UNAVAILABLE_LOG_INTERVAL_MS)));
  return limiter;
}

@Catch()
export class WritExceptionFilter implements ExceptionFilter {
  constructor(
    private readonly logger: Logger,
    private readonly unavailableLog: LogRateLimiter = unavailableLogLimiter(logger),
  ) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const context = host.switchToHttp();
    const response = context.getResponse<Response>();
    const request = context.getRequest<Request>();
    if (response.headersSent) {
      response.destroy();
      return;
    }
    response.setHeader('Cache-Control', 'no-store');
    response.setHeader('Pragma', 'no-cache');
    const send = (status: number, body: Record<string, unknown>) => response.status(status).json(body);

    if (exception instanceof OAuthError) {
      const header = wwwAuthenticateFor(exception);
      if (header) response.setHeader('WWW-Authenticate', header);
      const retryAfter = (exception as { retryAfterSeconds?: unknown }).retryAfterSeconds;
      if (typeof retryAfter === 'number') response.setHeader('Retry-After', String(retryAfter));
      else if (exception.status === 503) response.setHeader('Retry-After', '5');
      send(exception.status, exception.toJSON());
      return;
    }
    if (exception instanceof ValidationFailedError) {
      send(400, { error: 'invalid_request', message: exception.message, fields: exception.fields });
      return;
    }
    if (exception instanceof UnprocessableRequestError) {
      send(422, { error: 'invalid_request', message: exception.message, fields: exception.fields });
      return;
    }
    if (exception instanceof NotFoundError) {
      send(404, { error: 'not_found', message: exception.message });
      return;
    }
    if (exception instanceof ConflictError) {
      send(409, { error: 'conflict', message: exception.message });
      return;
    }
    if (exception instanceof AuditUnavailableError || isConnectionError(exception) || isTransientError(exception)) {
      // One short line, no stack, and at most one per interval per error code: during an outage
      // every request lands here, and a line each would flood the log.
      const cause = exception instanceof AuditUnavailableError ? ((exception as { cause?: unknown }).cause ?? exception) : exception;
      const code = (cause as { code?: unknown }).code;
      const decision = this.unavailableLog.take(typeof code === 'string' ? code.slice(0, 40) : 'unknown');
      if (decision.log) {
        this.logger.warn(
          {
            err: { message: cause instanceof Error ? cause.message : String(cause), code: typeof code === 'string' ? code : undefined },
            path: loggablePath(requestPath(request)),
            suppressed: decision.suppressed,
          },
          decision.suppressed > 0
            ? `database unavailable: refusing (fail closed); ${decision.suppressed} more refused since the last line`
            : 'database unavailable: refusing (fail closed)',
        );
      }
      response.setHeader('Retry-After', '5');
      send(503, { error: 'temporarily_unavailable', error_description: 'the service cannot record this request right now; retry later' });
      return;
    }
    if (isDataException(exception)) {
      // A value that reached PostgreSQL unchecked (a malformed uuid or time, NUL in text): the
      // request is at fault, never the server. Logged, because a check is missing upstream.
      this.logger.warn(
        { code: (exception as { code: string }).code, path: loggablePath(requestPath(request)), method: request.method },
        'a request value reached the database unchecked',
      );
      send(400, { error: 'invalid_request', error_description: 'a value in the request is not valid (malformed identifier, time, number or text)' });
      return;
    }
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      const body = exception.getResponse();
      const message = typeof body === 'object' && body && 'message' in body ? body.message : exception.message;
      const description = Array.isArray(message) ? message.join('; ') : String(message);
      const bodyTooLarge = (exception as { cause?: { type?: string } }).cause?.type === 'entity.too.large';
      send(status, { error: nestErrorCode(status), error_description: bodyTooLarge ? 'request body is too large' : description });
      return;
    }
    const parserError = exception as { type?: string; status?: number; limit?: number };
    if (parserError?.type === 'entity.too.large') {
      send(HttpStatus.PAYLOAD_TOO_LARGE, { error: 'invalid_request', error_description: `request body exceeds ${parserError.limit} bytes` });
      return;
    }
    if (parserError?.type === 'entity.parse.failed' || parserError?.status === 400) {
      send(400, { error: 'invalid_request', error_description: 'request body could not be parsed' });
      return;
    }
    const clientStatus = exposedClientStatus(exception);
    if (clientStatus !== undefined) {
      // Any other refusal of body-parser or Express (`http-errors`, `expose: true`): an unknown
      // `Content-Encoding` (415), a body shorter than its `Content-Length` (400)... The request
      // is at fault: its status, never a 500. The message is the library's, written for clients.
      const { type, message } = exception as { type?: unknown; message: string };
      const description =
        type === 'encoding.unsupported'
          ? 'unsupported content-encoding: send the body as identity, gzip, deflate or br'
          : message.replace(/[^\x20-\x7e]/g, '?').slice(0, 200) || 'the request was refused';
      send(clientStatus, { error: nestErrorCode(clientStatus), error_description: description });
      return;
    }
    this.logger.error({ err: describe(exception), path: loggablePath(requestPath(request)), method: request.method }, 'unhandled error');
    send(500, { error: 'server_error', error_description: 'an internal error occurred' });
  }
}

/**
 * The status of an `http-errors` error meant for the client (`expose: true`, a 4xx
 * `status`/`statusCode`), as body-parser and Express throw them; `undefined` for any other value.
 */
function exposedClientStatus(error: unknown): number | undefined {
  if (!(error instanceof Error)) return undefined;
  const { expose, status, statusCode } = error as { expose?: unknown; status?: unknown; statusCode?: unknown };
  if (expose !== true) return undefined;
  const value = typeof status === 'number' ? status : statusCode;
  return typeof value === 'number' && Number.isInteger(value) && value >= 400 && value <= 499 ? value : undefined;
}

/** A PostgreSQL data exception (SQLSTATE class 22: invalid text representation, datetime, NUL byte...). */
function isDataException(error: unknown): boolean {
  const { code, severity } = (error ?? {}) as { code?: unknown; severity?: unknown };
  return typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code) && typeof severity === 'string';
}

function describe(error: unknown): Record<string, unknown> {
  if (error instanceof Error) return { name: error.name, message: error.message, stack: error.stack, code: (error as { code?: string }).code };
  return { value: String(error) };
}
