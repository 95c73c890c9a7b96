import { Inject, Injectable } from '@nestjs/common';
import type { PoolClient } from 'pg';
import { AuditEventInput, AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { newJti, SigningKeyStore } from '@writ/keys';
import type { ConnectorDetail } from '@writ/database';

/** The `typ` of every access token (RFC 9068). */
export const ACCESS_TOKEN_TYP = 'at+jwt';

/** What to put in a new access token and its row. */
export interface AccessTokenSpec {
  kind: 'connector' | 'tasks';
  clientId: string;
  subject: string;
  audience: string;
  lifetimeSeconds: number;
  scope?: string;
  taskId?: string;
  connectorId?: string;
  action?: string;
  risk?: string;
  authorizationDetails?: ConnectorDetail[];
  maxUses?: number | null;
  policyVersion?: string;
  /** Extra work in the same transaction (e.g. the task's counters). */
  alsoInTransaction?: (client: PoolClient) => Promise<void>;
  /** Events written with the token, besides `token.issued`. */
  events?: AuditEventInput[];
  /** Describes the token in its `token.issued` event. */
  auditActor: AuditEventInput['actor'];
}

/** An issued token and its claims. */
export interface IssuedAccessToken {
  token: string;
  jti: string;
  expiresIn: number;
  expiresAt: Date;
}

/**
 * Signs an RFC 9068 access token and commits its row with its audit events in one
 * transaction. The token is returned only after that commit: no event, no token.
 */
@Injectable()
export class AccessTokenIssuer {
  constructor(
    private readonly keys: SigningKeyStore,
    private readonly audit: AuditService,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
  ) {}

  /** Signs, records and returns the token. */
  async issue(spec: AccessTokenSpec): Promise<IssuedAccessToken> {
    const jti = newJti();
    const issuedAt = Math.floor(Date.now() / 1000);
    const expiresAtSeconds = issuedAt + spec.lifetimeSeconds;
    const claims: Record<string, unknown> = {
      sub: spec.subject,
      aud: spec.audience,
      client_id: spec.clientId,
      iat: issuedAt,
      exp: expiresAtSeconds,
      jti,
    };
    if (spec.scope) claims.scope = spec.scope;
    if (spec.authorizationDetails) claims.authorization_details = spec.authorizationDetails;
    if (spec.taskId) claims.task_id = spec.taskId;
    const token = await this.keys.sign(claims, { typ: ACCESS_TOKEN_TYP });
    const expiresAt = new Date(expiresAtSeconds * 1000);
    await this.audit.recordWith(
      async (client) => {
        await client.query(
          `INSERT INTO access_tokens (jti, kind, client_id, subject, task_id, connector_id, action, risk,
             authorization_details, scope, policy_version, max_uses, issued_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, to_timestamp($13), to_timestamp($14))`,
          [
            jti, spec.kind, spec.clientId, spec.subject, spec.taskId ?? null, spec.connectorId ?? null,
            spec.action ?? null, spec.risk ?? null,
            spec.authorizationDetails ? JSON.stringify(spec.authorizationDetails) : null,
            spec.scope ?? null, spec.policyVersion ?? null, spec.maxUses ?? null, issuedAt, expiresAtSeconds,
          ],
        );
        if (spec.alsoInTransaction) await spec.alsoInTransaction(client);
      },
      () => [
        ...(spec.events ?? []),
        {
          type: 'token.issued',
          outcome: 'success',
          actor: spec.auditActor,
          agentId: spec.kind === 'connector' ? spec.subject : null,
          taskId: spec.taskId ?? null,
          connectorId: spec.connectorId ?? null,
          data: {
            jti,
            kind: spec.kind,
            client_id: spec.clientId,
            aud: spec.audience,
            scope: spec.scope,
            action: spec.action,
            risk: spec.risk,
            authorization_details: spec.authorizationDetails,
            max_uses: spec.maxUses ?? null,
            expires_at: expiresAt.toISOString(),
            policy_version: spec.policyVersion,
            kid: this.keys.activeKid(),
          },
        },
      ],
    );
    return { token, jti, expiresIn: spec.lifetimeSeconds, expiresAt };
  }

  /** The audience of the Tasks API tokens. */
  tasksAudience(): string {
    return `${this.config.issuer}/v1/tasks`;
  }

  /** The audience (resource) of a connector's credentials. */
  connectorAudience(connectorId: string): string {
    return `${this.config.gatewayUrl}/connectors/${connectorId}`;
  }
}
