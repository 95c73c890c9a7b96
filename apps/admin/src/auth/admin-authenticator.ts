import { Inject, Injectable } from '@nestjs/common';
import type { Request } from 'express';
import type { Pool } from 'pg';
import { PG_POOL } from '@writ/database';
import { AuditService } from '@writ/audit';
import { RowIntegrity } from '@writ/grants';
import { FailureThrottle, hashAdminToken, sourceAddress } from '@writ/platform';
import { AdminForbiddenError, AdminThrottledError, AdminUnauthorizedError } from './admin-auth.errors';
import type { AdminPrincipal } from './admin-principal';
import { type AdminRole, isAdminRole } from './admin-role';

/** Longest bearer value looked up; admin tokens are about 54 characters. */
const MAX_TOKEN_LENGTH = 512;

/**
 * Authenticates `Authorization: Bearer <admin token>` against `admin_tokens` (by SHA-256,
 * never revoked): the one check of both the guard and the middleware that runs it before any
 * body is read. `last_used_at` is written at most once a minute per token, so reads do not each
 * cost a write. Failures are counted per source (across instances) and audited.
 */
@Injectable()
export class AdminAuthenticator {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly throttle: FailureThrottle,
    private readonly audit: AuditService,
    private readonly integrity: RowIntegrity,
  ) {}

  /**
   * The token's principal, or {@link AdminUnauthorizedError} (401) / {@link AdminThrottledError} (429).
   * Looked up afresh on every call: the guard calls it again for a request whose token was checked
   * before its body was read, since a slow client decides how long that body takes, and a token
   * revoked (or expired) meanwhile must not make the change once the body is in.
   */
  async authenticate(request: Request): Promise<AdminPrincipal> {
    const source = sourceAddress(request);
    const blocked = await this.throttle.refuseIfBlocked('admin', source);
    if (blocked) throw new AdminThrottledError(blocked.retryAfterSeconds);
    const token = bearerToken(request.headers.authorization);
    if (!token) return this.refuse(request, source, 'missing', 'an admin token is required: Authorization: Bearer <token>');
    const tokenHash = hashAdminToken(token);
    const { rows } = await this.pool.query<{
      id: string;
      name: string;
      role: string;
      stale: boolean;
      expired: boolean;
      expires_at: Date | null;
      integrity_tag: string | null;
    }>(
      `SELECT id, name, role, (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') AS stale,
              (expires_at IS NOT NULL AND expires_at <= now()) AS expired, expires_at, integrity_tag
         FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL`,
      [tokenHash],
    );
    const row = rows[0];
    // A token row Writ did not write (inserted or given another role or expiry by hand: its
    // integrity tag does not verify) is unknown.
    if (
      !row ||
      !isAdminRole(row.role) ||
      !this.integrity.verifyAdminToken({ id: row.id, role: row.role, tokenHash, expiresAt: row.expires_at }, row.integrity_tag)
    ) {
      return this.refuse(request, source, 'unknown_or_revoked', 'the admin token is unknown or revoked');
    }
    // Counted like any other failure: whoever holds an expired token may not keep trying it.
    if (row.expired) return this.refuse(request, source, 'expired', 'the admin token has expired');
    if (row.stale) {
      await this.pool.query(
        `UPDATE admin_tokens SET last_used_at = now()
          WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`,
        [row.id],
      );
    }
    return { id: row.id, name: row.name, role: row.role };
  }

  /**
   * A known admin token used beyond its role: recorded as `admin.authorization_denied` (actor:
   * the token; what it tried and which role that needs), then `403`. Each is its own event, as
   * for every refusal of an authenticated caller (Vault's audit log records denied requests too):
   * a viewer token trying to mint admin tokens is what an investigation looks for. Not counted
   * towards the source's throttle, so one user's mistakes never lock others out of that address.
   */
  async forbid(principal: AdminPrincipal, required: AdminRole, attempted: { method: string; path: string }, message?: string): Promise<never> {
    await this.audit.record({
      type: 'admin.authorization_denied',
      outcome: 'denied',
      actor: { type: 'admin', id: principal.id },
      data: { method: attempted.method, path: attempted.path.slice(0, 256), role: principal.role, required_role: required },
    });
    throw new AdminForbiddenError(message ?? `this operation requires the ${required} role; this token has the ${principal.role} role`);
  }

  /**
   * A failed authentication: counted per source (across instances), audited as
   * `admin.authentication_failed` up to the per-window cap, then `401`, or `429` past the limit.
   */
  private async refuse(request: Request, source: string, reason: string, message: string): Promise<never> {
    const verdict = await this.throttle.failure('admin', source);
    if (verdict.audit) {
      await this.audit.record({
        type: 'admin.authentication_failed',
        outcome: 'failure',
        actor: { type: 'anonymous', id: null },
        data: { reason, method: request.method, path: request.path.slice(0, 256), source },
      });
    }
    if (verdict.limited) throw new AdminThrottledError(verdict.retryAfterSeconds);
    throw new AdminUnauthorizedError(message);
  }
}

function bearerToken(header: string | undefined): string | undefined {
  if (!header || header.length > MAX_TOKEN_LENGTH + 7) return undefined;
  const match = /^Bearer +([\x21-\x7e]+) *$/i.exec(header);
  return match?.[1];
}
