import { Inject, Injectable } from '@nestjs/common';
import type { Pool } from 'pg';
import { AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { CredentialRevoker, GrantStore } from '@writ/grants';
import { PG_POOL } from '@writ/database';
import { SigningKeyStore } from '@writ/keys';
import { FormParams, InvalidRequestError, TemporarilyUnavailableError } from '@writ/oauth';
import type { RegisteredClient } from '../client-auth/registered-client';
import { OAuthFailureGate } from '../client-auth/oauth-failure-gate.service';
import { TASK_TOKEN_TYP } from '../exchange/task-token';
import { TokenLookup } from '../introspection/token-lookup.service';

/**
 * Token revocation (RFC 7009). Access tokens are revoked one by one. A task token is the
 * root of every credential of its task (as a refresh token is of its access tokens, RFC 7009
 * §2.1): revoking it ends the task as `revoked` and revokes every credential of the task
 * before answering, so neither the task token nor anything it bought works any more.
 */
@Injectable()
export class RevocationService {
  constructor(
    private readonly gate: OAuthFailureGate,
    private readonly lookup: TokenLookup,
    private readonly audit: AuditService,
    private readonly keys: SigningKeyStore,
    private readonly revoker: CredentialRevoker,
    @Inject(PG_POOL) private readonly pool: Pool,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    private readonly grants: GrantStore,
  ) {}

  /**
   * Revokes a token the client is entitled to; effective on every instance once this
   * resolves. Unknown or foreign tokens are ignored (RFC 7009 §2.2: the answer is 200 anyway).
   */
  async revoke(params: FormParams, authorization: string | undefined, source: string): Promise<void> {
    const client = await this.gate.authenticate('revocation', params, authorization, source);
    const token = params.get('token');
    if (!token) throw new InvalidRequestError('token is required');
    if (await this.revokeTaskToken(token, client)) return;
    const known = await this.lookup.find(token, client);
    if (!known || known.revokedAt) return;
    await this.audit.recordWith(
      async (tx) => {
        return this.grants.revokeCredential(tx, known.jti, `revoked by ${client.kind} ${client.id}`);
      },
      (revoked) =>
        revoked
          ? [
              {
                type: 'token.revoked',
                outcome: 'success',
                actor: { type: client.kind, id: client.id },
                agentId: known.kind === 'connector' ? known.subject : null,
                taskId: known.taskId,
                connectorId: known.connectorId,
                data: { jtis: [known.jti], count: 1, reason: 'RFC 7009 revocation request' },
              },
            ]
          : [],
    );
  }

  /**
   * When `token` is a task token of this issuer (expired ones included): ends its task if the
   * client is the task's agent or its orchestrator, and returns true; a foreign client's
   * request changes nothing. False when it is not a task token.
   */
  private async revokeTaskToken(token: string, client: RegisteredClient): Promise<boolean> {
    let claims: { task_id?: unknown; jti?: unknown; sub?: unknown };
    try {
      claims = (await this.keys.verify(token, { typ: TASK_TOKEN_TYP, audience: this.config.issuer, currentDate: new Date(0) })).payload;
    } catch (error) {
      // A key this instance cannot read: unknown whether it is a task token, so nothing is said revoked.
      if (error instanceof TemporarilyUnavailableError) throw error;
      return false;
    }
    if (typeof claims.task_id !== 'string' || typeof claims.jti !== 'string') return true;
    const { rows } = await this.pool.query<{ agent_id: string; orchestrator_id: string; task_token_jti: string }>(
      'SELECT agent_id, orchestrator_id, task_token_jti FROM tasks WHERE id = $1',
      [claims.task_id],
    );
    const task = rows[0];
    if (!task || task.task_token_jti !== claims.jti) return true;
    const entitled = client.kind === 'agent' ? task.agent_id === client.id && claims.sub === client.id : task.orchestrator_id === client.id;
    if (!entitled) return true;
    await this.revoker.endTask(claims.task_id, 'revoked', `task token revoked (RFC 7009) by ${client.kind} ${client.id}`, {
      type: client.kind,
      id: client.id,
    });
    return true;
  }
}
