import { Injectable } from '@nestjs/common';
import { AuditService } from '@writ/audit';
import { FormParams, InvalidRequestError } from '@writ/oauth';
import { OAuthFailureGate } from '../client-auth/oauth-failure-gate.service';
import { TokenLookup } from '../introspection/token-lookup.service';

/** Token revocation (RFC 7009). */
@Injectable()
export class RevocationService {
  constructor(
    private readonly gate: OAuthFailureGate,
    private readonly lookup: TokenLookup,
    private readonly audit: AuditService,
  ) {}

  /**
   * Revokes a token the client is entitled to; effective on every instance once this
   * resolves. Unknown or foreign tokens are ignored (RFC 7009 §2.2: the answer is 200 anyway).
   */
  async revoke(params: FormParams, authorization: string | undefined, source: string): Promise<void> {
    const client = await this.gate.authenticate('revocation', params, authorization, source);
    const token = params.get('token');
    if (!token) throw new InvalidRequestError('token is required');
    const known = await this.lookup.find(token, client);
    if (!known || known.revokedAt) return;
    await this.audit.recordWith(
      async (tx) => {
        const { rowCount } = await tx.query(
          `UPDATE access_tokens SET revoked_at = now(), revoked_reason = $2 WHERE jti = $1 AND revoked_at IS NULL`,
          [known.jti, `revoked by ${client.kind} ${client.id}`],
        );
        return rowCount === 1;
      },
      (revoked) =>
        revoked
          ? [{
              type: 'token.revoked',
              outcome: 'success',
              actor: { type: client.kind, id: client.id },
              agentId: known.kind === 'connector' ? known.subject : null,
              taskId: known.taskId,
              connectorId: known.connectorId,
              data: { jtis: [known.jti], count: 1, reason: 'RFC 7009 revocation request' },
            }]
          : [],
    );
  }
}
