import { Inject, Injectable } from '@nestjs/common';
import { AuditEventInput, AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { newJti, SigningKeyStore } from '@writ/keys';
import type { ConnectorDetail } from '@writ/database';
import { InvalidGrantError } from '@writ/oauth';
import type { PoolClient } from 'pg';

const TOKEN_COLUMNS = `jti, kind, client_id, subject, task_id, connector_id, action, risk,
  authorization_details, scope, policy_version, max_uses, issued_at, expires_at`;
const TOKEN_VALUES = `$1, $2, $3, $4, $5::uuid, $6, $7, $8, $9::jsonb, $10, $11, $12::int, to_timestamp($13), to_timestamp($14)`;

/**
 * A connector credential is recorded only if, at commit, its agent is active (the row is
 * share-locked, so a concurrent suspension waits or is seen) and its task is active and
 * before its deadline; the task's grant counter moves in the same statement.
 */
const INSERT_CONNECTOR_TOKEN = `
  WITH agent AS (SELECT id FROM agents WHERE id = $4 AND status = 'active' FOR SHARE),
       task AS (UPDATE tasks SET grants_issued = grants_issued + 1
                 WHERE id = $5::uuid AND status = 'active' AND expires_at > now() AND EXISTS (SELECT 1 FROM agent)
             RETURNING id)
  INSERT INTO access_tokens (${TOKEN_COLUMNS}) SELECT ${TOKEN_VALUES} WHERE EXISTS (SELECT 1 FROM task)`;

const INSERT_TASKS_TOKEN = `INSERT INTO access_tokens (${TOKEN_COLUMNS}) VALUES (${TOKEN_VALUES})`;

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
  /** Runs in the issuing transaction before the row is written; throwing aborts the issuance. */
  beforeInsert?: (client: PoolClient) => Promise<void>;
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
        if (spec.beforeInsert) await spec.beforeInsert(client);
        const values = [
          jti, spec.kind, spec.clientId, spec.subject, spec.taskId ?? null, spec.connectorId ?? null,
          spec.action ?? null, spec.risk ?? null,
          spec.authorizationDetails ? JSON.stringify(spec.authorizationDetails) : null,
          spec.scope ?? null, spec.policyVersion ?? null, spec.maxUses ?? null, issuedAt, expiresAtSeconds,
        ];
        const { rowCount } = await client.query(spec.kind === 'connector' ? INSERT_CONNECTOR_TOKEN : INSERT_TASKS_TOKEN, values);
        // The agent was suspended or the task ended since the request was checked: issue nothing.
        if (rowCount !== 1) throw new InvalidGrantError('the task or the agent is no longer active');
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
