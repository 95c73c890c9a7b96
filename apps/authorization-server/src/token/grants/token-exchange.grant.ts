import { Inject, Injectable } from '@nestjs/common';
import { AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { CredentialRevoker, staleDecision, taskEndEvents } from '@writ/grants';
import { budgetRules, DeclaredEntry, GrantStore, grantFloorViolations, limitedEntriesCovering, operatorsOf, POLICY_DENIED } from '@writ/grants';
import type { ConnectorDetail } from '@writ/database';
import { SigningKeyStore, TokenVerificationError } from '@writ/keys';
import {
  AccessDeniedError,
  AuthorizationPendingError,
  GRANT_TYPE_TOKEN_EXCHANGE,
  TOKEN_TYPE_ACCESS_TOKEN,
  InvalidAuthorizationDetailsError,
  InvalidGrantError,
  optionalParam,
  parseTokenExchangeRequest,
  safeToken,
  TemporarilyUnavailableError,
} from '@writ/oauth';
import { ActivePolicy, buildPolicyInput, canonicalJson, Decision, evaluateFailClosed, PolicyEngine, PolicyInput } from '@writ/policy';
import {
  APPROVAL_MAX_SECONDS,
  APPROVAL_POLL_INTERVAL_SECONDS,
  ApprovalDeniedBeforeError,
  ApprovalDto,
  ApprovalStore,
  TooManyPendingApprovalsError,
} from '@writ/grants';
import { LOGGER } from '@writ/platform';
import type { Logger } from 'pino';
import type { PoolClient } from 'pg';
import type { RegisteredClient } from '../../client-auth/registered-client';
import { CatalogueConnector, ExchangeContextRepository, ExchangeTask } from '../../exchange/exchange-context.repository';
import { TASK_TOKEN_TYP, TaskTokenClaims } from '../../exchange/task-token';
import { AccessTokenIssuer, CatalogueChangedError, StaleDecisionError } from '../access-token-issuer.service';
import type { GrantContext, GrantHandler } from '../grant-handler';
import type { TokenResponseDto } from '../token-response.dto';
import { TaskGrantRefusal } from '../task-grant-refusal';

/**
 * Token exchange (RFC 8693 with RFC 9396 `authorization_details`): an agent trades its task
 * token for a credential scoped to one operation on one connector. The compiled Rego policy
 * decides against the task's declared purpose; the server then also enforces the contract's
 * invariant (inside `allowed`, one connector, one action) whatever the policy said.
 */
@Injectable()
export class TokenExchangeGrant implements GrantHandler {
  readonly grantType = GRANT_TYPE_TOKEN_EXCHANGE;
  readonly clientKinds = ['agent'] as const;
  /** The assertion's jti is spent with the credential, in the issuing batch (one transaction fewer per exchange). */
  readonly spendsAssertionJti = true;

  constructor(
    private readonly context: ExchangeContextRepository,
    private readonly keys: SigningKeyStore,
    private readonly policy: ActivePolicy,
    private readonly issuer: AccessTokenIssuer,
    private readonly audit: AuditService,
    private readonly revoker: CredentialRevoker,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly approvals: ApprovalStore,
    private readonly grants: GrantStore,
  ) {}

  /**
   * Checks the task token, asks the policy, and issues the narrowed credential. When the
   * connector's operation changed between the decision and the issuance (the credential was
   * not recorded), decides once more on the catalogue as it is now.
   */
  async handle(context: GrantContext): Promise<TokenResponseDto> {
    try {
      return await this.exchange(context);
    } catch (error) {
      if (!(error instanceof CatalogueChangedError)) throw error;
      this.context.forget(error.connectorId);
      return this.exchange(context);
    }
  }

  private async exchange({ params, client, dpop, assertionJti }: GrantContext): Promise<TokenResponseDto> {
    const request = parseTokenExchangeRequest(params, { gatewayUrl: this.config.gatewayUrl });
    const approvalId = optionalParam(params, 'approval_id');
    const task = await this.activeTaskOf(request.subjectToken, client);
    const details = request.authorizationDetails;
    const connectors = await this.context.connectors([...new Set(details.map((detail) => detail.connector))]);
    const limited = (task.allowed as DeclaredEntry[]).some((entry) => entry.limits !== undefined);
    // The budget rows are not tagged: what is left is bounded by the limits of the verified task row.
    const budgets = limited ? await this.grants.budgetsOf(task.id, budgetRules(task.allowed)) : [];
    const now = new Date();
    const engine = this.policy.current();
    // Read with the engine: where the policy that decides this request came from.
    const policyStored = this.policy.installedFromElsewhere;
    const input = buildPolicyInput({
      request: {
        grantType: GRANT_TYPE_TOKEN_EXCHANGE,
        authorizationDetails: details,
        resource: request.resource ?? null,
        dpopJkt: dpop?.jkt ?? null,
      },
      agent: { id: client.id, name: client.name, status: client.status },
      task: { ...task, budgets },
      connectors,
      connections: await this.context.connections(connectors, task.user),
      now,
    });
    const decision = this.enforceInvariant(this.evaluate(engine, input), details, task, connectors);
    const decisionData = {
      request: { authorization_details: details, resource: request.resource ?? null, dpop_jkt: dpop?.jkt ?? null },
      decision: {
        allow: decision.allow,
        reasons: decision.reasons,
        max_ttl_seconds: decision.max_ttl_seconds,
        max_uses: decision.max_uses,
        requires_approval: decision.requires_approval,
        quarantine: decision.quarantine,
        out_of_purpose: decision.out_of_purpose,
      },
      policy_version: engine.version,
    };
    let approval: ApprovalDto | undefined;
    if (decision.requires_approval) {
      // Spent before anything is recorded: a replayed assertion requests nothing, uses nothing.
      await assertionJti?.consume();
      if (!approvalId) await this.requestApproval(task, client, details, dpop?.jkt ?? null, decision, engine.version, policyStored, decisionData, connectors);
      approval = await this.approvedFor(approvalId!, task, client, details, dpop?.jkt ?? null);
    }
    if (!decision.allow && !approval) {
      // Spent before the refusal is counted: a replayed assertion never moves the task's counters.
      await assertionJti?.consume();
      const refused = await this.refuse(task, client, decision, decisionData, engine, policyStored, input, connectors);
      const reasons = refused.reasons.map((reason) => safeToken(reason, 300)).join('; ');
      throw new InvalidAuthorizationDetailsError(`denied by policy: ${reasons || 'no reason given'}`, { reason: POLICY_DENIED });
    }
    const detail = details[0];
    const connector = connectors.find((candidate) => candidate.id === detail.connector)!;
    const operation = connector.operations.find((candidate) => candidate.name === detail.actions[0])!;
    const audience = this.issuer.connectorAudience(connector.id);
    const secondsLeft = Math.floor((task.expiresAt.getTime() - now.getTime()) / 1000);
    const lifetime = Math.min(decision.max_ttl_seconds, secondsLeft);
    if (lifetime < 1) throw new InvalidGrantError('the task expires too soon to issue a credential');
    const budgetEntries = limited ? limitedEntriesCovering(detail, task.allowed, operatorsOf(connectors)) : [];
    const issued = await this.issuer.issue({
      kind: 'connector',
      clientId: client.id,
      clientVersion: client.version,
      subject: client.id,
      onBehalfOfUser: task.user?.subject,
      audience,
      lifetimeSeconds: lifetime,
      notAfter: task.expiresAt,
      taskId: task.id,
      connectorId: connector.id,
      action: operation.name,
      risk: operation.risk,
      operation,
      connectorVersion: connector.version,
      authorizationDetails: [detail],
      maxUses: decision.max_uses,
      policyVersion: engine.version,
      policyStored,
      cnfJkt: dpop?.jkt,
      budgetEntries,
      assertionJti,
      auditActor: { type: 'agent', id: client.id },
      beforeInsert: approval
        ? async (tx) => {
            if (!(await this.approvals.consume(tx, approval.id))) throw new AccessDeniedError('the approval was already used or has expired');
          }
        : undefined,
      events: [
        {
          type: 'grant.decision',
          outcome: 'success',
          actor: { type: 'agent', id: client.id },
          agentId: client.id,
          taskId: task.id,
          connectorId: connector.id,
          data: decisionData,
        },
        ...(approval
          ? [
              {
                type: 'approval.used',
                outcome: 'success' as const,
                actor: { type: 'agent' as const, id: client.id },
                agentId: client.id,
                taskId: task.id,
                connectorId: connector.id,
                data: { approval_id: approval.id },
              },
            ]
          : []),
      ],
    });
    return {
      access_token: issued.token,
      issued_token_type: TOKEN_TYPE_ACCESS_TOKEN,
      token_type: dpop ? 'DPoP' : 'Bearer',
      expires_in: issued.expiresIn,
      authorization_details: [detail],
    };
  }

  /**
   * Records a pending approval holding exactly these details and answers
   * `authorization_pending` with its id (the agent repeats the exchange with `approval_id`).
   */
  private async requestApproval(
    task: ExchangeTask,
    client: RegisteredClient,
    details: ConnectorDetail[],
    dpopJkt: string | null,
    decision: Decision,
    policyVersion: string,
    policyStored: boolean,
    decisionData: Record<string, unknown>,
    connectors: CatalogueConnector[],
  ): Promise<never> {
    const expiresAt = new Date(Math.min(task.expiresAt.getTime(), Date.now() + APPROVAL_MAX_SECONDS * 1000));
    const approval = await this.approvals
      .request(
        {
          taskId: task.id,
          agentId: client.id,
          connectorId: details[0].connector,
          authorizationDetails: details,
          reasons: decision.reasons,
          policyVersion,
          expiresAt,
          dpopJkt,
          check: (tx) => this.stillCurrent(tx, client, policyVersion, policyStored, connectors),
        },
        { type: 'agent', id: client.id },
        [
          {
            type: 'grant.decision',
            outcome: 'info',
            actor: { type: 'agent', id: client.id },
            agentId: client.id,
            taskId: task.id,
            connectorId: details[0].connector,
            data: decisionData,
          },
        ],
      )
      .catch((error: unknown) => {
        // Recorded with its decision; the agent is told to wait for the approvals it asked for,
        // or that a person already said no to this request on this task.
        throw error instanceof TooManyPendingApprovalsError || error instanceof ApprovalDeniedBeforeError ? new AccessDeniedError(error.message) : error;
      });
    const why =
      approval.status === 'approved'
        ? 'this request was approved: repeat it with its approval_id'
        : `a human must approve this request: ${decision.reasons.map((reason) => safeToken(reason, 200)).join('; ')}`;
    throw new AuthorizationPendingError(why, {
      approvalId: approval.id,
      interval: APPROVAL_POLL_INTERVAL_SECONDS,
    });
  }

  /**
   * The approval named by the agent, approved for exactly these details of this task, asked with
   * this DPoP key (or, like this request, with none): the operator approved a credential bound to
   * that key, not one that whoever holds the agent's client key and task token binds to their own
   * key or takes as a bearer token.
   */
  private async approvedFor(
    approvalId: string,
    task: ExchangeTask,
    client: RegisteredClient,
    details: ConnectorDetail[],
    dpopJkt: string | null,
  ): Promise<ApprovalDto> {
    const approval = await this.approvals.get(approvalId);
    if (!approval || approval.task_id !== task.id || approval.agent_id !== client.id) {
      throw new InvalidGrantError('approval_id does not name an approval of this task');
    }
    if (approval.dpop_jkt !== dpopJkt) throw new InvalidGrantError('the approval was asked for with another DPoP key (or none)');
    if (canonicalJson(approval.authorization_details) !== canonicalJson(details)) {
      throw new InvalidAuthorizationDetailsError('authorization_details differ from the approved ones');
    }
    switch (approval.status) {
      case 'pending':
        throw new AuthorizationPendingError('the approval is still pending', { approvalId: approval.id, interval: APPROVAL_POLL_INTERVAL_SECONDS });
      case 'denied':
        throw new AccessDeniedError('the approval was denied');
      case 'expired':
        throw new AccessDeniedError('the approval has expired');
      case 'used':
        throw new AccessDeniedError('the approval was already used');
      default:
        return approval;
    }
  }

  /** Evaluates the policy; a policy that traps yields its fail-closed deny (and is logged). */
  private evaluate(engine: PolicyEngine, input: PolicyInput): Decision {
    return evaluateFailClosed(engine, input, (error) => this.logger.error({ err: error.message, policy: engine.version }, 'policy evaluation failed: denying'));
  }

  /** Verifies the subject token and returns its task, active and belonging to this agent. */
  private async activeTaskOf(subjectToken: string, client: RegisteredClient): Promise<ExchangeTask> {
    let claims: TaskTokenClaims;
    try {
      const verified = await this.keys.verify(subjectToken, { typ: TASK_TOKEN_TYP, audience: this.config.issuer });
      claims = verified.payload as unknown as TaskTokenClaims;
    } catch (error) {
      if (error instanceof TemporarilyUnavailableError) throw error;
      if (error instanceof TokenVerificationError && error.code === 'ERR_JWT_EXPIRED') {
        throw new InvalidGrantError('subject_token has expired: the task is over');
      }
      throw new InvalidGrantError('subject_token is not a valid task token of this issuer');
    }
    const task = typeof claims.task_id === 'string' ? await this.context.task(claims.task_id) : undefined;
    if (!task || task.taskTokenJti !== claims.jti) {
      throw new InvalidGrantError('subject_token is not a valid task token of this issuer');
    }
    if (task.agentId !== client.id || claims.sub !== client.id) {
      throw new TaskGrantRefusal(task.id, 'subject_token was not issued to this client', { reason: 'task_of_another_agent' });
    }
    if (task.status === 'active' && task.expiresAt.getTime() <= Date.now()) {
      await this.revoker.endTask(task.id, 'expired', 'deadline passed', { type: 'system', id: 'token-endpoint' });
      task.status = 'expired';
    }
    if (task.status !== 'active') throw new TaskGrantRefusal(task.id, `the task is ${task.status}`, { reason: 'task_ended' });
    return task;
  }

  /**
   * The contract's floor under any policy ({@link grantFloorViolations}, the function the
   * policy dry run reports with): a policy may refuse more, never allow more.
   */
  private enforceInvariant(decision: Decision, details: ConnectorDetail[], task: ExchangeTask, connectors: CatalogueConnector[]): Decision {
    if (!decision.allow && !decision.requires_approval) return decision;
    const violations = grantFloorViolations(details, task.allowed, connectors);
    if (violations.length === 0) return decision;
    return { ...decision, allow: false, requires_approval: false, out_of_purpose: true, reasons: [...decision.reasons, ...violations] };
  }

  /**
   * Throws {@link StaleDecisionError} (the transaction records nothing) when the registration the
   * request was authenticated against, or the policy that decided it, is no longer current, and
   * {@link CatalogueChangedError} when a catalogue the policy saw is not (decided again on fresh
   * catalogues): a refusal or an approval request is recorded only as a fresh instance would record it.
   */
  private async stillCurrent(
    tx: PoolClient,
    client: RegisteredClient,
    policyVersion: string,
    policyStored: boolean,
    connectors: CatalogueConnector[],
  ): Promise<void> {
    const stale = await staleDecision(tx, { agentId: client.id, clientVersion: client.version, policyVersion, policyStored, connectors });
    if (stale === 'catalogue') throw new CatalogueChangedError(null);
    if (stale) throw new StaleDecisionError(stale);
  }

  /**
   * Records a refusal, its counters and, when the policy says so, the quarantine, all in one
   * transaction. The counter is incremented first (locking the task row until commit), and
   * when it moved since the request was evaluated (concurrent refusals, on any instance) the
   * policy is asked again against the fresh counters: the quarantine decision is made on the
   * count that includes every earlier refusal, so a burst of parallel out-of-purpose requests
   * cannot all read "below the threshold".
   */
  private async refuse(
    task: ExchangeTask,
    client: RegisteredClient,
    decision: Decision,
    data: Record<string, unknown>,
    engine: PolicyEngine,
    policyStored: boolean,
    input: PolicyInput,
    connectors: CatalogueConnector[],
  ): Promise<Decision> {
    const connectorId = (data.request as { authorization_details: ConnectorDetail[] }).authorization_details[0]?.connector ?? null;
    const actor = { type: 'agent' as const, id: client.id };
    const quarantineActor = { type: 'system' as const, id: 'policy' };
    const { result } = await this.audit.recordWith(
      async (tx) => {
        await this.stillCurrent(tx, client, engine.version, policyStored, connectors);
        const counted = await this.grants.recordRefusal(tx, task.id, decision.out_of_purpose === true);
        if (!counted) return { decision, ended: undefined };
        const priorRefusals = counted.refusals - 1;
        const priorOutOfPurpose = counted.outOfPurposeRequests - (decision.out_of_purpose ? 1 : 0);
        const history = input.task.history;
        const fresh =
          priorRefusals === history.refusals && priorOutOfPurpose === history.out_of_purpose_requests
            ? decision
            : this.evaluate(engine, {
                ...input,
                task: { ...input.task, history: { ...history, refusals: priorRefusals, out_of_purpose_requests: priorOutOfPurpose } },
              });
        const quarantine = counted.status === 'active' && fresh.quarantine === true;
        const reason = `quarantined by policy after ${counted.outOfPurposeRequests} out-of-purpose requests`;
        const ended = quarantine ? await this.grants.endTask(tx, task.id, 'revoked', reason) : undefined;
        // The reasons of the answer that decided, so a quarantine says so to the agent.
        const final = quarantine ? { ...decision, quarantine: true, reasons: fresh.reasons } : { ...decision, quarantine: false };
        return { decision: final, ended, counted };
      },
      (outcome) => [
        {
          type: 'grant.decision',
          outcome: 'denied',
          actor,
          agentId: client.id,
          taskId: task.id,
          connectorId,
          data: {
            ...data,
            decision: { ...(data.decision as Record<string, unknown>), quarantine: outcome.decision.quarantine, reasons: outcome.decision.reasons },
            ...(outcome.counted ? { history: { refusals: outcome.counted.refusals, out_of_purpose_requests: outcome.counted.outOfPurposeRequests } } : {}),
          },
        },
        ...(outcome.ended ? taskEndEvents(task.id, 'revoked', quarantineActor, outcome.ended) : []),
      ],
    );
    return result.decision;
  }
}
