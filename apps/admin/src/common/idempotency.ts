import { applyDecorators, createParamDecorator, ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { ApiHeader, ApiUnprocessableEntityResponse } from '@nestjs/swagger';
import type { Request, Response } from 'express';
import type { Pool, PoolClient } from 'pg';
import { canonicalJsonText } from '@writ/audit';
import { PG_POOL } from '@writ/database';
import { MasterKey } from '@writ/keys';
import { ConflictError, RUNTIME, type Runtime, UnprocessableRequestError, ValidationFailedError } from '@writ/platform';
import { ADMIN_PRINCIPAL, type AdminPrincipal } from '../auth/admin-principal';
import { ValidationErrorDto } from './error.dto';

/**
 * How long a create's `Idempotency-Key` is kept: 24 hours after the create (as Stripe keeps its
 * keys). A retry within it gets the first answer; the same key after it creates anew.
 */
export const IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 60 * 60;

/** Expired keys removed, at most, by each keyed create (besides its own key's). */
const EXPIRED_SWEEP = 100;

/** The header of an answer given again from a key's first request (its body is that first answer's). */
export const IDEMPOTENT_REPLAYED_HEADER = 'Idempotent-Replayed';

/**
 * The `Idempotency-Key` header: 1 to 255 visible ASCII characters (a UUID, say), or absent. Anything
 * else, a repeated header included (Node joins repeats with a comma and a space), is a `400`
 * naming it, never ignored (as the Tasks API reads it).
 */
export function idempotencyKeyOf(header: string | string[] | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (typeof header === 'string' && /^[\x21-\x7e]{1,255}$/.test(header)) return header;
  throw new ValidationFailedError(
    [{ field: 'Idempotency-Key', message: 'must be 1 to 255 visible ASCII characters, sent once (e.g. a UUID)' }],
    'the request headers are invalid',
  );
}

/** A create sent with an `Idempotency-Key`: whose key, for which endpoint, over which body. */
export interface IdempotentRequest {
  /** The admin token making the request (`admin_tokens.id`): keys are per token, never shared. */
  callerId: string;
  key: string;
  /** The create, e.g. `POST /v1/agents`: a key names one request to one endpoint. */
  endpoint: string;
  /** The body as sent (parsed JSON, before validation): it may hold secrets, and is never stored. */
  body: unknown;
  /** Marks the answer as a replay (`Idempotent-Replayed: true`). */
  markReplayed(): void;
}

/** The row kind of a key's request digest ({@link MasterKey.rowMac}). */
const DIGEST_KIND = 'admin_idempotency_keys';

/**
 * The RFC 8785 (JCS) text a key's digest is made over: who sent it, the key, the endpoint and the
 * body (member order and spacing do not count).
 */
function requestText(request: IdempotentRequest): string {
  return canonicalJsonText({ caller: request.callerId, key: request.key, endpoint: request.endpoint, body: request.body ?? null });
}

/**
 * Injects the request's {@link IdempotentRequest} (undefined without an `Idempotency-Key`) for
 * the create `endpoint` names, with the body as sent (parsed JSON), before validation.
 */
export const IdempotencyKey = createParamDecorator((endpoint: string, context: ExecutionContext): IdempotentRequest | undefined => {
  const request = context.switchToHttp().getRequest<Request & { [ADMIN_PRINCIPAL]?: AdminPrincipal }>();
  const key = idempotencyKeyOf(request.headers['idempotency-key']);
  if (key === undefined) return undefined;
  const principal = request[ADMIN_PRINCIPAL];
  // The guard always runs first; reaching here without it is a wiring bug, not a client error.
  if (!principal) throw new Error('admin principal missing: is the controller guarded?');
  const response = context.switchToHttp().getResponse<Response>();
  return {
    callerId: principal.id,
    key,
    endpoint,
    body: request.body,
    markReplayed: () => response.setHeader(IDEMPOTENT_REPLAYED_HEADER, 'true'),
  };
});

/**
 * Documents a create that takes an `Idempotency-Key` (see docs/admin-api.md, "Retries"); `action`
 * names another kind of `POST` made safe to retry the same way (a key rotation).
 */
export function IdempotentCreate(
  withheld?: string,
  action: { noun: string; nothing: string } = { noun: 'create', nothing: 'creates nothing' },
): MethodDecorator {
  return applyDecorators(
    ApiHeader({
      name: 'Idempotency-Key',
      required: false,
      description:
        `a unique value per ${action.noun} (a UUID), kept 24 hours per admin token: the same request again gets the first answer (201, ` +
        `\`${IDEMPOTENT_REPLAYED_HEADER}: true\`) and ${action.nothing}` +
        (withheld ? `; a replay leaves out \`${withheld}\`, shown only in the first answer` : ''),
    }),
    ApiUnprocessableEntityResponse({
      type: ValidationErrorDto,
      description: 'the Idempotency-Key was used by this admin token for another request (another endpoint or body) within 24 hours',
    }),
  );
}

/** Thrown in a create's transaction when its key was taken (by a concurrent twin that committed first). */
export class IdempotencyKeyTakenError extends Error {
  constructor() {
    super('the Idempotency-Key was taken by a concurrent request');
    this.name = 'IdempotencyKeyTakenError';
  }
}

/**
 * A create's hold on its key, used inside the create's own transaction: {@link take} first (the
 * key is recorded with the resource or not at all), {@link keep} once the answer is known.
 */
export class IdempotencyClaim {
  constructor(
    readonly request: IdempotentRequest,
    private readonly digest: string,
  ) {}

  /**
   * Takes the key for this request before anything is created. A twin sent at the same time (on
   * any instance) waits here on the key's unique index until the first commits, then finds the
   * key taken: {@link IdempotencyKeyTakenError}, its transaction rolls back, and it answers the
   * first's answer. This key, if expired, is removed first (so it is free again), and with it up
   * to {@link EXPIRED_SWEEP} other expired keys (of any token: a token that stops creating, or is
   * revoked, leaves none behind for good); rows another create is removing are skipped.
   */
  async take(tx: PoolClient): Promise<void> {
    const { callerId, key, endpoint } = this.request;
    // Two statements: only the first may wait (on a twin's hold of this key), and it runs before
    // this transaction holds any row of the sweep, which never waits: no lock cycle between creates.
    await tx.query('DELETE FROM admin_idempotency_keys WHERE admin_token_id = $1 AND idempotency_key = $2 AND expires_at <= now()', [callerId, key]);
    await tx.query(
      `DELETE FROM admin_idempotency_keys
        WHERE ctid = ANY (ARRAY(SELECT ctid FROM admin_idempotency_keys WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED))`,
      [EXPIRED_SWEEP],
    );
    const { rowCount } = await tx.query(
      `INSERT INTO admin_idempotency_keys (admin_token_id, idempotency_key, endpoint, request_digest, expires_at)
       VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) ON CONFLICT (admin_token_id, idempotency_key) DO NOTHING`,
      [callerId, key, endpoint, this.digest, IDEMPOTENCY_KEY_TTL_SECONDS],
    );
    if (rowCount !== 1) throw new IdempotencyKeyTakenError();
  }

  /** Records the answer a replay gives, in the same transaction. Never a secret shown once. */
  async keep(tx: PoolClient, answer: object): Promise<void> {
    await tx.query('UPDATE admin_idempotency_keys SET answer = $3 WHERE admin_token_id = $1 AND idempotency_key = $2', [
      this.request.callerId,
      this.request.key,
      JSON.stringify(answer),
    ]);
  }
}

/**
 * `work` (a create's transaction body) wrapped to take the claim's key first and keep the answer
 * last (`shown`: the answer a replay gives, without the secrets shown once); `work` itself
 * without a claim. A `work` that creates nothing throws (a taken id: `409`), and the key is
 * given back with the rollback.
 */
export function idempotent<T>(
  claim: IdempotencyClaim | undefined,
  work: (tx: PoolClient) => Promise<T>,
  shown: (result: T) => object = (result) => result as object,
): (tx: PoolClient) => Promise<T> {
  if (!claim) return work;
  return async (tx) => {
    await claim.take(tx);
    const result = await work(tx);
    await claim.keep(tx, shown(result));
    return result;
  };
}

/**
 * Creates in the admin API made safe to retry (`Idempotency-Key`, as Stripe's API takes it): the
 * same admin token, key, endpoint and body within 24 hours get the first answer again and create
 * nothing; the key with another endpoint or body is a `422` naming `Idempotency-Key`. What a
 * key's request was is kept as an HMAC under a subkey of the master key (its row MAC), never as
 * a plain hash: a body may carry an upstream credential, and a plain SHA-256 of a body whose
 * other members are known would let a reader of the database test guesses of a weak one.
 */
@Injectable()
export class AdminIdempotency {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly master: MasterKey,
    @Inject(RUNTIME) private readonly runtime: Runtime,
  ) {}

  /**
   * Runs `create` (given the claim its transaction must {@link idempotent take}), unless the key
   * already has an answer: then that answer. A concurrent twin that lost the race to the key
   * answers the winner's answer.
   */
  async run<T>(request: IdempotentRequest | undefined, create: (claim: IdempotencyClaim | undefined) => Promise<T>): Promise<T> {
    if (!request) return create(undefined);
    const kept = await this.kept(request);
    if (kept) return this.replay<T>(request, kept);
    try {
      return await create(new IdempotencyClaim(request, this.master.rowMac(DIGEST_KIND, requestText(request))));
    } catch (error) {
      if (!(error instanceof IdempotencyKeyTakenError)) throw error;
      const meanwhile = await this.kept(request);
      // Taken, then gone: the key expired just now. Nothing was created by this request.
      if (!meanwhile) throw new ConflictError('the request under this Idempotency-Key could not be read back; send the request again');
      return this.replay<T>(request, meanwhile);
    }
  }

  /** The key's unexpired record, if any. */
  private async kept(request: IdempotentRequest): Promise<{ endpoint: string; request_digest: string; answer: unknown } | undefined> {
    const { rows } = await this.pool.query<{ endpoint: string; request_digest: string; answer: unknown }>(
      `SELECT endpoint, request_digest, answer FROM admin_idempotency_keys
        WHERE admin_token_id = $1 AND idempotency_key = $2 AND expires_at > now()`,
      [request.callerId, request.key],
    );
    return rows[0];
  }

  private replay<T>(request: IdempotentRequest, kept: { endpoint: string; request_digest: string; answer: unknown }): T {
    // Verified under the key that made it (a previous master key's included, after a rotation).
    if (kept.endpoint !== request.endpoint || !this.master.verifyRowMac(DIGEST_KIND, requestText(request), kept.request_digest)) {
      this.runtime.metrics?.idempotentCreate('conflict');
      throw new UnprocessableRequestError(
        [{ field: 'Idempotency-Key', message: 'was used for another request (another endpoint or body) in the last 24 hours: use a new key' }],
        'this Idempotency-Key was used for another request',
      );
    }
    request.markReplayed();
    this.runtime.metrics?.idempotentCreate('replayed');
    return kept.answer as T;
  }
}
