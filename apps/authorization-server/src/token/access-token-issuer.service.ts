import { Inject, Injectable } from '@nestjs/common';
import { AuditEventInput, AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { newJti, SigningKeyStore } from '@writ/keys';
import type { ConnectorDetail } from '@writ/database';
import { ACCESS_TOKEN_TYP, InvalidGrantError } from '@writ/oauth';
import type { PoolClient } from 'pg';

const TOKEN_COLUMNS = `jti, kind, client_id, subject, task_id, connector_id, action, risk,
  authorization_details, scope, policy_version, max_uses, issued_at, expires_at, cnf_jkt, budget_entries`;

/** One row of `access_tokens` as the batched insert takes it (in {@link TOKEN_COLUMNS} order). */
type TokenRow = [string, string, string, string, string | null, string | null, string | null, string | null, string | null, string | null, string | null, number | null, number, number, string | null, string | null];

const UNNEST_TOKENS = `SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
  $8::text[], $9::jsonb[], $10::text[], $11::text[], $12::int[], $13::float8[], $14::float8[], $15::text[], $16::text[])
  AS u(jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version, max_uses, iat, exp, cnf_jkt,
       budget_entries)`;

/**
 * Inserts every connector credential of an audit batch in one statement. A credential is
 * recorded only if, at commit, its agent is active and its task active and before its
 * deadline; both rows are share-locked, so a concurrent suspension or task end waits for this
 * commit and then revokes these credentials too.
 */
const INSERT_CONNECTOR_TOKENS = `
  WITH input AS (${UNNEST_TOKENS}),
       live AS (SELECT i.* FROM input i
                  JOIN agents a ON a.id = i.subject AND a.status = 'active'
                  JOIN tasks t ON t.id = i.task_id AND t.status = 'active' AND t.expires_at > now()
                   FOR SHARE OF a, t)
  INSERT INTO access_tokens (${TOKEN_COLUMNS})
  SELECT jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
         max_uses, to_timestamp(iat), to_timestamp(exp), cnf_jkt, budget_entries::smallint[] FROM live
  RETURNING jti`;

/** Inserts every Tasks API token of an audit batch in one statement. */
const INSERT_TASKS_TOKENS = `
  INSERT INTO access_tokens (${TOKEN_COLUMNS})
  SELECT jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
         max_uses, to_timestamp(iat), to_timestamp(exp), cnf_jkt, budget_entries::smallint[] FROM (${UNNEST_TOKENS}) u
  RETURNING jti`;

/** Runs a batched insert; one result per row: was it recorded. */
function insertTokens(name: string, sql: string) {
  return async (client: PoolClient, rows: TokenRow[]): Promise<boolean[]> => {
    const columns = Array.from({ length: 16 }, (_, column) => rows.map((row) => row[column]));
    const { rows: inserted } = await client.query<{ jti: string }>({ name, text: sql, values: columns });
    const recorded = new Set(inserted.map((row) => row.jti));
    return rows.map((row) => recorded.has(row[0]));
  };
}
// Named: each connection prepares (parses and plans) them once.
const insertConnectorTokens = insertTokens('writ_insert_connector_tokens', INSERT_CONNECTOR_TOKENS);
const insertTasksTokens = insertTokens('writ_insert_tasks_tokens', INSERT_TASKS_TOKENS);


/** What to put in a new access token and its row. */
export interface AccessTokenSpec {
  kind: 'connector' | 'tasks';
  clientId: string;
  /** The agent (or orchestrator) the token is issued to. */
  subject: string;
  /**
   * The verified user a connector credential acts for: the JWT's `sub` becomes the user and
   * `act` = `{"sub": <subject>}` (RFC 8693 section 4.1); the row keeps the agent as subject.
   */
  onBehalfOfUser?: string;
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
  /** RFC 9449 `cnf.jkt`: the token is bound to this DPoP key. */
  cnfJkt?: string;
  /** Indexes of the task's limited `allowed` entries the credential's gateway calls are charged to. */
  budgetEntries?: number[];
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
      sub: spec.onBehalfOfUser ?? spec.subject,
      ...(spec.onBehalfOfUser ? { act: { sub: spec.subject } } : {}),
      aud: spec.audience,
      client_id: spec.clientId,
      iat: issuedAt,
      exp: expiresAtSeconds,
      jti,
    };
    if (spec.scope) claims.scope = spec.scope;
    if (spec.authorizationDetails) claims.authorization_details = spec.authorizationDetails;
    if (spec.taskId) claims.task_id = spec.taskId;
    if (spec.cnfJkt) claims.cnf = { jkt: spec.cnfJkt };
    const token = await this.keys.sign(claims, { typ: ACCESS_TOKEN_TYP });
    const expiresAt = new Date(expiresAtSeconds * 1000);
    const row: TokenRow = [
      jti, spec.kind, spec.clientId, spec.subject, spec.taskId ?? null, spec.connectorId ?? null,
      spec.action ?? null, spec.risk ?? null,
      spec.authorizationDetails ? JSON.stringify(spec.authorizationDetails) : null,
      spec.scope ?? null, spec.policyVersion ?? null, spec.maxUses ?? null, issuedAt, expiresAtSeconds, spec.cnfJkt ?? null,
      spec.budgetEntries?.length ? `{${spec.budgetEntries.join(',')}}` : null,
    ];
    const insert = spec.kind === 'connector' ? insertConnectorTokens : insertTasksTokens;
    const events = (recorded: boolean): AuditEventInput[] => (recorded ? [...(spec.events ?? []), this.issuedEvent(spec, jti, expiresAt)] : []);
    const { result: recorded } = spec.beforeInsert
      ? await this.audit.recordWith(async (client) => {
          await spec.beforeInsert!(client);
          // Not recorded (the task or agent ended meanwhile): roll back what beforeInsert did
          // too, e.g. an approval is not spent on a credential that was never issued.
          if (!(await insert(client, [row]))[0]) throw new InvalidGrantError('the task or the agent is no longer active');
          return true;
        }, events)
      : await this.audit.recordWithBatched({ kind: `insert-${spec.kind}-token`, params: row, run: insert }, events);
    if (!recorded) throw new InvalidGrantError('the task or the agent is no longer active');
    return { token, jti, expiresIn: spec.lifetimeSeconds, expiresAt };
  }

  private issuedEvent(spec: AccessTokenSpec, jti: string, expiresAt: Date): AuditEventInput {
    return {
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
        ...(spec.onBehalfOfUser ? { sub: spec.onBehalfOfUser, act: { sub: spec.subject } } : {}),
        aud: spec.audience,
        scope: spec.scope,
        action: spec.action,
        risk: spec.risk,
        authorization_details: spec.authorizationDetails,
        max_uses: spec.maxUses ?? null,
        ...(spec.cnfJkt ? { cnf_jkt: spec.cnfJkt } : {}),
        ...(spec.budgetEntries?.length ? { budget_entries: spec.budgetEntries } : {}),
        expires_at: expiresAt.toISOString(),
        policy_version: spec.policyVersion,
        kid: this.keys.activeKid(),
      },
    };
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
