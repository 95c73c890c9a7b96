import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import type { ConnectorDetail } from '@writ/database';
import { grantFloorViolations } from '@writ/grants';
import { checkAuthorizationDetails, exchangeTargetRefusal, GRANT_TYPE_TOKEN_EXCHANGE, TemporarilyUnavailableError } from '@writ/oauth';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { FieldError, loadPolicyEngine, LOGGER, MAX_FIELD_ERRORS, ValidationFailedError } from '@writ/platform';
import {
  ActivePolicy,
  buildPolicyInput,
  Decision,
  decisionOfProbe,
  evaluateFailClosed,
  PolicyEngine,
  PolicyInput,
  PolicyLoadError,
  PolicyProbeAnswer,
  PolicyProbeBusyError,
  probePolicy,
} from '@writ/policy';
import type { ActivePolicyDto, EvaluatePolicyDto, PolicyEvaluationDto } from './dto/policy.dtos';
import { PolicyFactsReader } from './policy-facts.reader';

/** The policy in force, and dry runs of it: nothing is issued, counted or recorded. */
@Injectable()
export class PoliciesService {
  constructor(
    private readonly policy: ActivePolicy,
    private readonly facts: PolicyFactsReader,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
  ) {}

  /** What is in force. */
  active(): ActivePolicyDto {
    const engine = this.policy.current();
    return { ...this.policy.describe(), entrypoint: engine.entrypoint, format: engine.format };
  }

  /**
   * Evaluates the active policy on a raw input, or on the input token exchange would build
   * for a stored task and the asked `authorization_details` (then also lists what the
   * server's own floor would refuse).
   */
  async evaluate(body: EvaluatePolicyDto): Promise<PolicyEvaluationDto> {
    if (body.input !== undefined) {
      const extra = (['task_id', 'authorization_details', 'resource'] as const).filter((member) => body[member] !== undefined);
      if (extra.length > 0) {
        throw new ValidationFailedError(
          extra.map((field) => ({ field, message: 'give either input, or task_id with authorization_details' })),
          'the dry run request is invalid',
        );
      }
      const { engine, answer } = await this.engineFor(body, body.input);
      return { policy_version: engine.version, decision: this.decide(engine, body.input as unknown as PolicyInput, answer) };
    }
    const fields: FieldError[] = [];
    if (body.task_id === undefined) fields.push({ field: 'task_id', message: 'is required (or give input)' });
    let details: ConnectorDetail[] = [];
    if (body.authorization_details === undefined) fields.push({ field: 'authorization_details', message: 'is required (or give input)' });
    else {
      // Every problem, each naming its member (`authorization_details[1].actions`).
      const checked = checkAuthorizationDetails(body.authorization_details, { maxProblems: MAX_FIELD_ERRORS });
      if (checked.details === undefined) fields.push(...checked.problems.map((problem) => ({ field: problem.path, message: problem.description })));
      else details = checked.details;
    }
    const subject = body.task_id !== undefined ? await this.facts.subject(body.task_id) : undefined;
    if (body.task_id !== undefined && !subject) fields.push({ field: 'task_id', message: 'no such task' });
    if (fields.length > 0 || !subject) throw new ValidationFailedError(fields, 'the dry run request is invalid');

    const connectors = await this.facts.connectors([...new Set(details.map((detail) => detail.connector))]);
    const input = buildPolicyInput({
      request: { grantType: GRANT_TYPE_TOKEN_EXCHANGE, authorizationDetails: details, resource: body.resource ?? null, dpopJkt: null },
      agent: subject.agent,
      task: subject.task,
      connectors,
      now: new Date(),
    });
    const { engine, answer } = await this.engineFor(body, input);
    return {
      policy_version: engine.version,
      decision: this.decide(engine, input, answer),
      input: input as unknown as Record<string, unknown>,
      violations: [
        // What the exchange refuses before asking the policy (connectors, locations, resource).
        ...[exchangeTargetRefusal(details, body.resource, this.config.gatewayUrl)].flatMap((refusal) => (refusal ? [refusal.description] : [])),
        ...grantFloorViolations(details, subject.task.allowed as ConnectorDetail[], connectors),
      ],
    };
  }

  /**
   * The active policy, or the candidate bundle and/or data to try instead (nothing is activated).
   * The policy must first answer, on a worker and in time, the very `input` the dry run then
   * evaluates here on the event loop (OPA's WebAssembly cannot be interrupted): an operator gives
   * the input, and maybe the policy, and one that answers the sample request but spins on theirs
   * (a candidate module, or the policy in force on an input larger than the token endpoint lets
   * through) would stop the instance.
   */
  private async engineFor(body: EvaluatePolicyDto, input: unknown): Promise<{ engine: PolicyEngine; answer: PolicyProbeAnswer | undefined }> {
    const request = { input, description: "the dry run's input" };
    const candidate = body.candidate_bundle !== undefined ? 'candidate_bundle' : body.candidate_data !== undefined ? 'candidate_data' : undefined;
    try {
      if (body.candidate_bundle !== undefined) {
        const bundle = Buffer.from(body.candidate_bundle, 'base64');
        const answer = await probePolicy(bundle, body.candidate_data ?? null, undefined, undefined, request);
        return { engine: await loadPolicyEngine(bundle, body.candidate_data ?? null), answer };
      }
      const engine = body.candidate_data !== undefined ? await this.policy.current().withData(body.candidate_data) : this.policy.current();
      return { engine, answer: await probePolicy(engine.wasm, engine.data, undefined, engine.entrypoint, request) };
    } catch (error) {
      if (error instanceof PolicyProbeBusyError) throw new TemporarilyUnavailableError(error.message);
      if (error instanceof PolicyLoadError) {
        // The policy in force refusing in time: what the operator gave is the input.
        const field = candidate ?? (body.input !== undefined ? 'input' : 'authorization_details');
        throw new ValidationFailedError(
          [{ field, message: error.message }],
          candidate ? 'the candidate policy does not load' : 'the dry run request is invalid',
        );
      }
      throw error;
    }
  }

  /**
   * The worker's answer to the input, the one the probe computed: evaluating it again here would
   * hold the event loop as long (up to the probe's 5 s, on an input an operator chose). A policy
   * that traps answers its fail-closed deny, as token exchange does.
   */
  private decide(engine: PolicyEngine, input: PolicyInput, answer: PolicyProbeAnswer | undefined): Decision {
    const trapped = (message: string) => this.logger.warn({ err: message, policy: engine.version }, 'policy dry run trapped: answering the fail-closed deny');
    if (answer) return decisionOfProbe(answer, trapped);
    return evaluateFailClosed(engine, input, (error) => trapped(error.message));
  }
}
