import { UnsupportedMediaTypeException } from '@nestjs/common';
import express from 'express';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { DEFAULT_MAX_JSON_DEPTH, JsonInputError, OBJECT_PROTOTYPE_JSON_KEYS, parseJsonInput } from '@writ/oauth';
import { MAX_FIELD_ERRORS, ValidationFailedError } from './http-exception.filter';
import { contentTypeCharset, declaresUtf8 } from './request-values';

/** Options of {@link strictJsonBody}. */
export interface StrictJsonBodyOptions {
  /** Largest body read, in bytes (413 above). */
  limit: number;
  /** Deepest nesting accepted (400 deeper). Default {@link DEFAULT_MAX_JSON_DEPTH}. */
  maxDepth?: number;
  /**
   * Paths of members that hold secrets (`credential.token`): a problem there is reported without
   * quoting the value (a number that cannot be kept exactly is not shown as the number it reads as).
   * Default none.
   */
  secretPaths?: RegExp;
}

const JSON_TYPES = ['application/json', 'application/*+json'];
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/**
 * The JSON body parser of the admin and Tasks APIs, instead of `express.json`: the body must be
 * UTF-8 and a JSON object or array, and it is read with {@link parseJsonInput}, so duplicate
 * keys, the keys `__proto__`, `constructor`, `prototype` and every other name `Object.prototype`
 * holds (`toString`, `valueOf`…: {@link OBJECT_PROTOTYPE_JSON_KEYS}), lone surrogates, NUL characters,
 * numbers out of range and nesting deeper than `maxDepth` are a `400` naming the member, before
 * any framework code (class-transformer drops some of these keys silently) sees the body. Every
 * such problem is listed (in document order, at most {@link MAX_FIELD_ERRORS}); a body that is
 * not JSON at all is one problem naming `body`.
 */
export function strictJsonBody(options: StrictJsonBodyOptions): RequestHandler {
  const raw = express.raw({ type: JSON_TYPES, limit: options.limit });
  return (req: Request, res: Response, next: NextFunction): void => {
    // A body an earlier parser of this app already read (a policy bundle) is that endpoint's.
    if (Buffer.isBuffer(req.body)) {
      next();
      return;
    }
    raw(req, res, (error?: unknown) => {
      if (error) next(error);
      else if (Buffer.isBuffer(req.body) && req.is(JSON_TYPES)) parse(req, next, options);
      else if (carriesBody(req)) next(notJson(req));
      else next();
    });
  };
}

/**
 * True when the request announces a body (`Transfer-Encoding`, or a `Content-Length` above 0).
 * Such a body in another type than JSON was left unread, and Nest's validation would have seen
 * `{}`: a `PATCH` suspending an agent sent as `text/plain` answered 200 and changed nothing.
 */
export function carriesBody(req: Request): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) > 0);
}

function notJson(req: Request): UnsupportedMediaTypeException {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim();
  const shown = type ? `"${type.replace(/[^\x21-\x7e]/g, '?').slice(0, 64)}"` : 'missing';
  return new UnsupportedMediaTypeException(`content-type ${shown}: the body must be application/json`);
}

/** The problem as the answer states it: at a secret member, without the value it quotes. */
function problemShown(error: JsonInputError, secretPaths: RegExp | undefined): string {
  if (error.reason !== 'inexact_number' || !secretPaths?.test(error.path)) return error.problem;
  return 'is a number that cannot be kept exactly (send a secret as a string)';
}

function parse(req: Request, next: NextFunction, options: StrictJsonBodyOptions): void {
  if (!declaresUtf8(req.headers['content-type'])) {
    const charset = contentTypeCharset(req.headers['content-type']) ?? '';
    next(new UnsupportedMediaTypeException(`unsupported charset "${charset.replace(/[^\x20-\x7e]/g, '?').slice(0, 32)}": JSON bodies are UTF-8`));
    return;
  }
  const bytes = req.body as Buffer;
  if (bytes.length === 0) {
    req.body = {};
    next();
    return;
  }
  try {
    const text = utf8.decode(bytes);
    const first = text.trimStart()[0];
    if (first !== '{' && first !== '[') {
      throw new ValidationFailedError([{ field: 'body', message: 'must be a JSON object or array' }], 'the request body is invalid');
    }
    req.body = parseJsonInput(text, {
      maxDepth: options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH,
      forbidNul: true,
      maxProblems: MAX_FIELD_ERRORS,
      forbiddenKeys: OBJECT_PROTOTYPE_JSON_KEYS,
    });
    next();
  } catch (error) {
    if (error instanceof JsonInputError) {
      // Every member problem, in document order; a syntax error (no path) names the body alone.
      const fields = error.problems.map((problem) => ({ field: problem.path || 'body', message: problemShown(problem, options.secretPaths) }));
      next(new ValidationFailedError(fields, 'the request body is invalid'));
    } else if (error instanceof ValidationFailedError) {
      next(error);
    } else {
      next(new ValidationFailedError([{ field: 'body', message: 'is not valid UTF-8' }], 'the request body is invalid'));
    }
  }
}
