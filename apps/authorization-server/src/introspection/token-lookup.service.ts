import { Inject, Injectable } from '@nestjs/common';
import { decodeProtectedHeader } from 'jose';
import type { Pool } from 'pg';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { AccessTokenEntity, ConnectorDetail, PG_POOL, RowOf, TaskEntity } from '@writ/database';
import { SigningKeyStore } from '@writ/keys';
import type { RegisteredClient } from '../client-auth/registered-client';
import { ACCESS_TOKEN_TYP, TemporarilyUnavailableError } from '@writ/oauth';
import { ExchangeContextRepository, ExchangeTask } from '../exchange/exchange-context.repository';
import { TASK_TOKEN_TYP, TaskTokenClaims } from '../exchange/task-token';

/** An access token row joined with its task's status and orchestrator. */
export interface KnownToken {
  jti: string;
  kind: 'connector' | 'tasks';
  clientId: string;
  subject: string;
  taskId: string | null;
  taskStatus: string | null;
  taskOrchestratorId: string | null;
  connectorId: string | null;
  scope: string | null;
  authorizationDetails: ConnectorDetail[] | null;
  maxUses: number | null;
  uses: number;
  issuedAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
  claims: Record<string, unknown>;
}

/** A task token a client presents, with its task (its row's integrity tag verified). */
export interface KnownTaskToken {
  claims: TaskTokenClaims;
  task: ExchangeTask;
}

/** The row {@link TokenLookup.find} reads. */
type KnownTokenRow = Pick<
  RowOf<AccessTokenEntity>,
  | 'jti'
  | 'kind'
  | 'client_id'
  | 'subject'
  | 'task_id'
  | 'connector_id'
  | 'scope'
  | 'authorization_details'
  | 'max_uses'
  | 'uses'
  | 'issued_at'
  | 'expires_at'
  | 'revoked_at'
> & { task_status: TaskEntity['status'] | null; orchestrator_id: string | null };

/**
 * Finds the token a client presents to introspection or revocation: it must be a token this
 * issuer signed, and the client must be entitled to it (an agent its own tokens, an
 * orchestrator its own and those of its tasks). Anything else is "not found".
 */
@Injectable()
export class TokenLookup {
  constructor(
    private readonly keys: SigningKeyStore,
    @Inject(PG_POOL) private readonly pool: Pool,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    private readonly tasks: ExchangeContextRepository,
  ) {}

  /** Whether `token` says it is a task token (its header, not verified): where to look it up. */
  static looksLikeTaskToken(token: string): boolean {
    try {
      return decodeProtectedHeader(token).typ === TASK_TOKEN_TYP;
    } catch {
      return false;
    }
  }

  /**
   * The task token if it verifies (expired ones included), its task's row verifies and names it,
   * and the client may see it (the task's agent, or its orchestrator). Throws
   * `TemporarilyUnavailableError` when the signing keys cannot be read right now.
   */
  async findTaskToken(token: string, client: RegisteredClient): Promise<KnownTaskToken | undefined> {
    let claims: TaskTokenClaims;
    try {
      const verified = await this.keys.verify(token, { typ: TASK_TOKEN_TYP, audience: this.config.issuer, currentDate: new Date(0) });
      claims = verified.payload as unknown as TaskTokenClaims;
    } catch (error) {
      if (error instanceof TemporarilyUnavailableError) throw error;
      return undefined;
    }
    if (typeof claims.task_id !== 'string' || typeof claims.jti !== 'string') return undefined;
    const task = await this.tasks.task(claims.task_id);
    if (!task || task.taskTokenJti !== claims.jti) return undefined;
    const entitled = client.kind === 'agent' ? task.agentId === client.id && claims.sub === client.id : task.orchestratorId === client.id;
    return entitled ? { claims, task } : undefined;
  }

  /**
   * The token if it verifies (expired tokens included) and the client may see it. Throws
   * `TemporarilyUnavailableError` when the signing keys cannot be read right now.
   */
  async find(token: string, client: RegisteredClient): Promise<KnownToken | undefined> {
    let claims: Record<string, unknown>;
    try {
      // Signature and type only: expired tokens are still found (introspected inactive, or revoked idempotently).
      claims = (await this.keys.verify(token, { typ: ACCESS_TOKEN_TYP, currentDate: new Date(0) })).payload;
    } catch (error) {
      // A key this instance cannot read says nothing of the token: unavailable (503), never "not found".
      if (error instanceof TemporarilyUnavailableError) throw error;
      return undefined;
    }
    if (typeof claims.jti !== 'string') return undefined;
    const { rows } = await this.pool.query<KnownTokenRow>(
      `SELECT t.jti, t.kind, t.client_id, t.subject, t.task_id, k.status AS task_status, k.orchestrator_id,
              t.connector_id, t.scope, t.authorization_details, t.max_uses, t.uses, t.issued_at, t.expires_at, t.revoked_at
         FROM access_tokens t LEFT JOIN tasks k ON k.id = t.task_id WHERE t.jti = $1`,
      [claims.jti],
    );
    const row = rows[0];
    if (!row) return undefined;
    // The row is not tagged: it must name the client and task the token was signed for, and
    // its use limit and expiry count only as far as the token signs them.
    if (row.client_id !== claims.client_id || (row.task_id ?? undefined) !== claims.task_id) return undefined;
    const signedMaxUses = typeof claims.max_uses === 'number' ? claims.max_uses : null;
    const signedExpiry = typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : row.expires_at;
    const known: KnownToken = {
      jti: row.jti,
      kind: row.kind,
      clientId: row.client_id,
      subject: row.subject,
      taskId: row.task_id,
      taskStatus: row.task_status,
      taskOrchestratorId: row.orchestrator_id,
      connectorId: row.connector_id,
      scope: typeof claims.scope === 'string' ? claims.scope : null,
      authorizationDetails: Array.isArray(claims.authorization_details) ? (claims.authorization_details as ConnectorDetail[]) : null,
      maxUses: signedMaxUses === null ? row.max_uses : row.max_uses === null ? signedMaxUses : Math.min(row.max_uses, signedMaxUses),
      uses: row.uses,
      issuedAt: row.issued_at,
      expiresAt: signedExpiry.getTime() < row.expires_at.getTime() ? signedExpiry : row.expires_at,
      revokedAt: row.revoked_at,
      claims,
    };
    const entitled = known.clientId === client.id || (client.kind === 'orchestrator' && known.taskOrchestratorId === client.id);
    return entitled ? known : undefined;
  }

  /** Whether a known token can still be used. */
  static isActive(token: KnownToken, now = new Date()): boolean {
    if (token.revokedAt || token.expiresAt.getTime() <= now.getTime()) return false;
    if (token.kind === 'connector' && token.taskStatus !== 'active') return false;
    if (token.maxUses !== null && token.uses >= token.maxUses) return false;
    return true;
  }
}
