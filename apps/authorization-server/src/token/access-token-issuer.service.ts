import { Inject, Injectable } from '@nestjs/common';
import { AuditEventInput, AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { newJti, SigningKeyStore } from '@writ/keys';
import type { ConnectorDetail, ConnectorOperation } from '@writ/database';
import { ACCESS_TOKEN_TYP, clientAuthenticationFailed, InvalidGrantError } from '@writ/oauth';
import type { PoolClient } from 'pg';
import { connectorCredentials, CredentialRow, decidedOperation, IssueOutcome, tasksTokens } from '@writ/grants';
import type { ClientAssertionJti } from '../client-auth/client-assertion-jti';
import { TaskGrantRefusal } from './task-grant-refusal';

/** The catalogue changed between the decision and the issuance: decide again on the new one. */
export class CatalogueChangedError extends InvalidGrantError {
  constructor(readonly connectorId: string | null) {
    super("the connector's operation changed while the credential was issued: repeat the request");
  }
}

/**
 * Not a refusal: the client registration the request was authenticated against (`client`), or
 * the policy it was decided with (`policy`), is no longer the current one. Nothing was
 * recorded and the assertion's `jti` was not spent: authenticate or decide again.
 */
export class StaleDecisionError extends Error {
  constructor(readonly what: 'client' | 'policy') {
    super(`the ${what === 'client' ? 'client registration' : 'active policy'} changed while the credential was issued`);
    this.name = 'StaleDecisionError';
  }
}

/** The refusal of a credential that was not recorded. */
function notRecorded(outcome: Exclude<IssueOutcome, 'recorded'>, connectorId: string | null, taskId: string | null): Error {
  if (outcome === 'client_changed') return new StaleDecisionError('client');
  if (outcome === 'policy_changed') return new StaleDecisionError('policy');
  if (outcome === 'replayed') return clientAuthenticationFailed('assertion_replay');
  if (outcome === 'catalogue_changed') return new CatalogueChangedError(connectorId);
  const description = 'the task or the agent is no longer active';
  return taskId ? new TaskGrantRefusal(taskId, description, { reason: 'task_or_agent_ended' }) : new InvalidGrantError(description);
}

/** What to put in a new access token and its row. */
export interface AccessTokenSpec {
  kind: 'connector' | 'tasks';
  clientId: string;
  /** The version of the client's registration the request was authenticated against. */
  clientVersion: string;
  /** The agent (or orchestrator) the token is issued to. */
  subject: string;
  /**
   * The verified user a connector credential acts for: the JWT's `sub` becomes the user and
   * `act` = `{"sub": <subject>}` (RFC 8693 section 4.1); the row keeps the agent as subject.
   */
  onBehalfOfUser?: string;
  audience: string;
  lifetimeSeconds: number;
  /**
   * The latest the token may expire (its task's expiry). The lifetime was decided before the
   * token is signed; whatever the request waited for in between must not move `exp` past it.
   */
  notAfter?: Date;
  scope?: string;
  taskId?: string;
  connectorId?: string;
  action?: string;
  risk?: string;
  /**
   * The catalogue operation the issuance was decided on, and the connector's version read with it
   * (both required for `connector` credentials): the credential is recorded only if the
   * operation is still that one and the connector row still at that version.
   */
  operation?: Pick<ConnectorOperation, 'method' | 'path' | 'constraints'>;
  connectorVersion?: string;
  authorizationDetails?: ConnectorDetail[];
  maxUses?: number | null;
  policyVersion?: string;
  /** Whether the policy of `policyVersion` was installed from the database (not the instance's file). */
  policyStored?: boolean;
  /** RFC 9449 `cnf.jkt`: the token is bound to this DPoP key. */
  cnfJkt?: string;
  /** Indexes of the task's limited `allowed` entries the credential's gateway calls are charged to. */
  budgetEntries?: number[];
  /**
   * The client assertion `jti` still to be spent (connector credentials): spent in the statement
   * that writes the credential, so that a replay, on any instance, records nothing.
   */
  assertionJti?: ClientAssertionJti;
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
    // A programming error, not a refusal: without it the insert could never match the catalogue.
    if (spec.kind === 'connector' && (!spec.operation || !spec.connectorVersion))
      throw new Error('a connector credential needs the operation and connector version it was decided on');
    const jti = newJti();
    const issuedAt = Math.floor(Date.now() / 1000);
    const notAfterSeconds = spec.notAfter ? Math.floor(spec.notAfter.getTime() / 1000) : Infinity;
    const expiresAtSeconds = Math.min(issuedAt + spec.lifetimeSeconds, notAfterSeconds);
    const expiresIn = expiresAtSeconds - issuedAt;
    if (expiresIn < 1) throw new InvalidGrantError('the task expires too soon to issue a credential');
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
    // Signed, so that the gateway bounds the row's (untagged) use limit and budget charge by
    // them: a database administrator raising `max_uses` or clearing `budget_entries` buys
    // nothing. Absent when there is no limit or budget (the row can then only narrow).
    if (spec.kind === 'connector' && spec.maxUses !== undefined && spec.maxUses !== null) claims.max_uses = spec.maxUses;
    if (spec.kind === 'connector' && spec.budgetEntries?.length) claims.budget_entries = spec.budgetEntries;
    // The kid recorded is the one in the token's header: the active key may change (a reload
    // after a rotation on any instance) before the audit batch builds the event.
    const { token, kid } = await this.keys.sign(claims, { typ: ACCESS_TOKEN_TYP });
    const expiresAt = new Date(expiresAtSeconds * 1000);
    // With beforeInsert (an approval), the jti is spent first, in a transaction of its own.
    if (spec.beforeInsert) await spec.assertionJti?.consume();
    const claimed = spec.kind === 'connector' ? spec.assertionJti?.claim() : undefined;
    if (spec.kind !== 'connector') await spec.assertionJti?.consume();
    const row: CredentialRow = [
      jti,
      spec.kind,
      spec.clientId,
      spec.subject,
      spec.taskId ?? null,
      spec.connectorId ?? null,
      spec.action ?? null,
      spec.risk ?? null,
      spec.authorizationDetails ? JSON.stringify(spec.authorizationDetails) : null,
      spec.scope ?? null,
      spec.policyVersion ?? null,
      spec.maxUses ?? null,
      issuedAt,
      expiresAtSeconds,
      spec.cnfJkt ?? null,
      spec.budgetEntries?.length ? `{${spec.budgetEntries.join(',')}}` : null,
      spec.operation && spec.connectorVersion ? decidedOperation(spec.operation, spec.connectorVersion) : null,
      spec.clientVersion,
      spec.policyStored ?? false,
      claimed?.jti ?? null,
      claimed ? Math.ceil(claimed.expiresAt.getTime() / 1000) : null,
    ];
    const batch = spec.kind === 'connector' ? connectorCredentials : tasksTokens;
    const events = (outcome: IssueOutcome): AuditEventInput[] =>
      outcome === 'recorded' ? [...(spec.events ?? []), this.issuedEvent(spec, jti, expiresAt, kid)] : [];
    const { result: outcome } = spec.beforeInsert
      ? await this.audit.recordWith(async (client) => {
          await spec.beforeInsert!(client);
          // Not recorded (the task or agent ended, or the operation changed, meanwhile): roll
          // back what beforeInsert did too, e.g. an approval is not spent on a credential that
          // was never issued.
          const [written] = await batch.run(client, [row]);
          if (written !== 'recorded') throw notRecorded(written, spec.connectorId ?? null, spec.taskId ?? null);
          return written;
        }, events)
      : await this.audit
          .recordWithBatched({ kind: `insert-${spec.kind}-token`, params: row, run: batch.run, inline: batch.inline }, events)
          .catch((error: unknown) => {
            spec.assertionJti?.settle('failed');
            throw error;
          });
    // Authenticated or decided on what is no longer current: the jti was not spent.
    const stale = outcome === 'client_changed' || outcome === 'policy_changed';
    spec.assertionJti?.settle(outcome === 'replayed' ? 'replayed' : stale ? 'failed' : 'spent');
    if (outcome !== 'recorded' && outcome !== 'replayed') throw notRecorded(outcome, spec.connectorId ?? null, spec.taskId ?? null);
    return { token, jti, expiresIn, expiresAt };
  }

  private issuedEvent(spec: AccessTokenSpec, jti: string, expiresAt: Date, kid: string): AuditEventInput {
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
        kid,
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
