import { Inject, Injectable } from '@nestjs/common';
import { createHash, randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import { AuditEventInput, AuditService, canonicalJsonText } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { CredentialRevoker, decodeGrantsCursor, TaskDto, TaskReader } from '@writ/grants';
import { ConnectorDetail, ConnectorOperation, PG_POOL, TaskStatus } from '@writ/database';
import { newJti, SigningKeyStore } from '@writ/keys';
import { checkAuthorizationDetails, connectorResourceUrl, foreignLocations } from '@writ/oauth';
import { ConflictError, FieldError, MAX_FIELD_ERRORS, NotFoundError, ValidationFailedError } from '@writ/platform';
import { budgetRules, DeclaredEntry, GrantStore, validateTaskLimits } from '@writ/grants';
import { TASK_TOKEN_TYP } from '../exchange/task-token';
import type { CreateTaskDto } from './dto/create-task.dto';
import type { CreatedTaskDto } from './dto/created-task.dto';
import { agentFieldErrors, declarerRefusal } from './declarer-standing';
import type { OrchestratorPrincipal } from './orchestrator-bearer.guard';
import { UserSubjects } from './user-subjects.service';

const MAX_METADATA_BYTES = 4096;

/** What identifies a declaration under its `Idempotency-Key`: the SHA-256 of its body's RFC 8785 form. */
function requestDigest(body: CreateTaskDto): string {
  return createHash('sha256').update(canonicalJsonText(body)).digest('hex');
}

/** Checks a declared constraint value against its operator. */
function constraintTypeError(op: string, value: unknown): string | undefined {
  const scalar = (v: unknown) => typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
  switch (op) {
    case 'lte':
    case 'gte':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : `must be a number (operator ${op})`;
    case 'in':
      return Array.isArray(value) && value.length > 0 && value.every(scalar) ? undefined : 'must be a non-empty array (operator in)';
    case 'eq':
      return scalar(value) ? undefined : 'must be a string, number or boolean (operator eq)';
    default:
      return `cannot be enforced: the catalogue gives it operator ${JSON.stringify(op)}, which Writ does not support`;
  }
}

/** The Tasks API: orchestrators declare, read, complete and fail tasks. */
@Injectable()
export class TasksService {
  private readonly reader: TaskReader;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly keys: SigningKeyStore,
    private readonly audit: AuditService,
    private readonly revoker: CredentialRevoker,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    private readonly grants: GrantStore,
    private readonly subjects: UserSubjects,
  ) {
    this.reader = new TaskReader(pool);
  }

  /**
   * Declares a task and returns its task token (shown once). With an `Idempotency-Key`, a task is
   * declared once per orchestrator and key: the same request again gets that task back (see
   * {@link replay}), another request under the key a `409`.
   */
  async create(orchestrator: OrchestratorPrincipal, body: CreateTaskDto, idempotencyKey?: string): Promise<CreatedTaskDto> {
    const idempotency = idempotencyKey === undefined ? undefined : { key: idempotencyKey, digest: requestDigest(body) };
    if (idempotency) {
      const declared = await this.grants.taskDeclaredWithKey(this.pool, orchestrator.id, idempotency.key);
      if (declared) return this.replay(orchestrator, declared, idempotency.digest);
    }
    const agent = await this.pool.query<{ status: string }>('SELECT status FROM agents WHERE id = $1', [body.agent_id]);
    const fields: FieldError[] = agentFieldErrors(orchestrator.allowedAgents, body.agent_id, agent.rows[0]?.status ?? null);
    if (body.metadata && Buffer.byteLength(JSON.stringify(body.metadata)) > MAX_METADATA_BYTES) {
      fields.push({ field: 'metadata', message: `must be at most ${MAX_METADATA_BYTES} bytes of JSON` });
    }
    const allowed = await this.validateAllowed(body.allowed, fields);
    if (fields.length > 0) throw new ValidationFailedError(fields, 'the task declaration is invalid');
    const proven = await this.subjects.prove(orchestrator.id, body);
    const user = proven?.user;

    const id = randomUUID();
    const jti = newJti();
    const now = Math.floor(Date.now() / 1000);
    const exp = now + body.ttl_seconds;
    // The event names the key in the token's header (not the active key when the batch is built).
    const { token: taskToken, kid } = await this.keys.sign(
      { sub: body.agent_id, aud: this.config.issuer, task_id: id, jti, iat: now, exp, client_id: orchestrator.id },
      { typ: TASK_TOKEN_TYP },
    );
    const expiresAt = new Date(exp * 1000);
    // What the guard and the checks above decided on is checked again, under share locks, in the
    // transaction that records the task: an admin change committed meanwhile (the user's token
    // may have taken seconds to verify, and a provider's registration is read again only every
    // few seconds) refuses the task as a fresh request would be refused.
    const { result: refusal } = await this.audit.recordWith(
      async (client) => {
        const standing = await this.grants.declarerStanding(client, orchestrator.id, orchestrator.jti, body.agent_id);
        const refused = declarerRefusal(standing, body.agent_id) ?? (proven ? await this.subjects.refusalAt(client, orchestrator.id, proven) : undefined);
        if (refused) return refused;
        const declared = await this.grants.declareTask(client, {
          id,
          agentId: body.agent_id,
          orchestratorId: orchestrator.id,
          purpose: body.purpose,
          allowed,
          onBehalfOf: body.on_behalf_of ?? null,
          metadata: body.metadata ?? {},
          taskTokenJti: jti,
          createdAtSeconds: now,
          expiresAt,
          budgets: budgetRules(allowed),
          ...(user ? { user: { issuer: user.issuer, subject: user.subject } } : {}),
          idempotency,
        });
        // Declared meanwhile under the same key (a concurrent retry): that one stands.
        if (!declared) return 'replay' as const;
        return undefined;
      },
      // A refusal records nothing, as the guard's and the checks' refusals do not.
      (refused): AuditEventInput[] =>
        refused
          ? []
          : [
              {
                type: 'task.created',
                outcome: 'success',
                actor: { type: 'orchestrator', id: orchestrator.id },
                agentId: body.agent_id,
                taskId: id,
                data: {
                  purpose: body.purpose,
                  allowed,
                  ttl_seconds: body.ttl_seconds,
                  expires_at: expiresAt.toISOString(),
                  on_behalf_of: body.on_behalf_of ?? null,
                  ...(proven ? { user: { iss: proven.user.issuer, sub: proven.user.subject, proof: proven.proof } } : {}),
                  metadata: body.metadata ?? {},
                  kid,
                },
              },
            ],
    );
    if (refusal === 'replay') {
      const declared = await this.grants.taskDeclaredWithKey(this.pool, orchestrator.id, idempotency!.key);
      if (!declared) throw new ConflictError('the task declared under this Idempotency-Key could not be read back; send the request again');
      return this.replay(orchestrator, declared, idempotency!.digest);
    }
    if (refusal) throw refusal;
    return { task_id: id, task_token: taskToken, expires_at: expiresAt.toISOString(), status: 'active' };
  }

  /**
   * The answer to a declaration sent again under its `Idempotency-Key` (its answer was lost, say):
   * the same task, with its task token signed again (same claims, `jti` included: the task accepts
   * either copy) and recorded as `task.token_reissued`. A different request under the key is a
   * `409`: keys name one declaration, never a new one.
   */
  private async replay(
    orchestrator: OrchestratorPrincipal,
    declared: NonNullable<Awaited<ReturnType<GrantStore['taskDeclaredWithKey']>>>,
    digest: string,
  ): Promise<CreatedTaskDto> {
    if (declared.digest !== digest) {
      throw new ConflictError('this Idempotency-Key was used for another task declaration: use a new key for a new task');
    }
    const exp = Math.floor(declared.expiresAt.getTime() / 1000);
    const { token, kid } = await this.keys.sign(
      {
        sub: declared.agentId,
        aud: this.config.issuer,
        task_id: declared.id,
        jti: declared.taskTokenJti,
        iat: declared.createdAtSeconds,
        exp,
        client_id: orchestrator.id,
      },
      { typ: TASK_TOKEN_TYP },
    );
    await this.audit.record({
      type: 'task.token_reissued',
      outcome: 'success',
      actor: { type: 'orchestrator', id: orchestrator.id },
      agentId: declared.agentId,
      taskId: declared.id,
      data: { reason: 'idempotent_replay', status: declared.status, kid },
    });
    return { task_id: declared.id, task_token: token, expires_at: declared.expiresAt.toISOString(), status: declared.status as TaskStatus };
  }

  /** A task of this orchestrator, with a page of its grants (`grantsCursor`: the `grants_cursor` query parameter). */
  async get(orchestrator: OrchestratorPrincipal, id: string, grantsCursor?: unknown): Promise<TaskDto> {
    const page = decodeGrantsCursor(grantsCursor);
    if (!page) throw new ValidationFailedError([{ field: 'grants_cursor', message: "is not a cursor of a task's grants" }], 'the query is invalid');
    const task = await this.reader.get(id, orchestrator.id, page.after);
    if (!task) throw new NotFoundError('task');
    return task;
  }

  /**
   * Ends a task (`completed` or `failed`), revoking every credential before answering. Whose task
   * it is is checked without reading its grants: however many its agent minted, the end is not
   * held up (nor made to fail) by loading them.
   */
  async end(orchestrator: OrchestratorPrincipal, id: string, status: 'completed' | 'failed'): Promise<TaskDto> {
    if (!(await this.reader.exists(id, orchestrator.id))) throw new NotFoundError('task');
    await this.revoker.endTask(id, status, `${status} by orchestrator`, { type: 'orchestrator', id: orchestrator.id });
    return this.get(orchestrator, id);
  }

  /**
   * The declared purpose, checked against the catalogue so that the orchestrator learns of a
   * mistake at declaration (not the agent at exchange): each entry names a registered
   * connector and operations of its catalogue; each declared constraint is enforceable by
   * every one of the entry's actions, with a value of the right type for each operator; and
   * `limits` (not an RFC 9396 member: taken aside before parsing) are well formed.
   */
  private async validateAllowed(raw: unknown[], fields: FieldError[]): Promise<DeclaredEntry[]> {
    const declaredLimits = new Map<number, unknown>();
    const entries = raw.map((entry, index) => {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry) || !Object.hasOwn(entry, 'limits')) return entry;
      const { limits, ...rest } = entry as Record<string, unknown>;
      declaredLimits.set(index, limits);
      return rest;
    });
    // Every problem of every entry, each naming its member (`allowed[1].actions[0]`).
    const checked = checkAuthorizationDetails(entries, { maxEntries: 20, maxProblems: MAX_FIELD_ERRORS });
    if (checked.details === undefined) {
      const renamed = (text: string) => text.replace(/^authorization_details/, 'allowed').replaceAll('authorization_details', 'allowed');
      for (const problem of checked.problems) fields.push({ field: renamed(problem.path), message: renamed(problem.description) });
      return [];
    }
    const details: ConnectorDetail[] = checked.details;
    const ids = [...new Set(details.map((detail) => detail.connector))];
    const { rows } = await this.pool.query<{ id: string; operations: ConnectorOperation[] }>(
      `SELECT id, operations FROM connectors WHERE id = ANY($1::text[])`,
      [ids],
    );
    const catalogue = new Map<string, ConnectorOperation[]>(rows.map((row) => [row.id, row.operations]));
    return details.map((detail, index) => {
      const operations = catalogue.get(detail.connector);
      if (!operations) {
        fields.push({ field: `allowed[${index}].connector`, message: `no connector "${detail.connector}" is registered` });
        return detail;
      }
      for (const location of foreignLocations(this.config.gatewayUrl, detail)) {
        fields.push({
          field: `allowed[${index}].locations[${location}]`,
          message: `must be the URL of the connector, ${connectorResourceUrl(this.config.gatewayUrl, detail.connector)}`,
        });
      }
      const listed = detail.actions.map((action) => operations.find((operation) => operation.name === action));
      listed.forEach((operation, actionIndex) => {
        if (!operation)
          fields.push({
            field: `allowed[${index}].actions[${actionIndex}]`,
            message: `connector ${detail.connector} has no operation "${detail.actions[actionIndex]}"`,
          });
      });
      for (const [name, value] of Object.entries(detail.constraints ?? {})) {
        const field = `allowed[${index}].constraints.${name}`;
        const known = listed.filter((operation): operation is ConnectorOperation => operation !== undefined);
        const unable = known.filter((operation) => !operation.constraints?.[name]).map((operation) => operation.name);
        if (unable.length > 0) {
          fields.push({ field, message: `cannot be enforced on ${unable.join(', ')}: the operation has no constraint of that name` });
          continue;
        }
        for (const op of new Set(known.map((operation) => operation.constraints[name].op))) {
          const problem = constraintTypeError(op, value);
          if (problem) {
            fields.push({ field, message: problem });
            break;
          }
        }
      }
      if (!declaredLimits.has(index)) return detail;
      const { limits, problems } = validateTaskLimits(declaredLimits.get(index), `allowed[${index}].limits`, detail, listed);
      fields.push(...problems);
      return limits ? { ...detail, limits } : detail;
    });
  }
}
