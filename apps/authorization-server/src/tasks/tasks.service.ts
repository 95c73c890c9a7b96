import { Inject, Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import { AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { CredentialRevoker, TaskDto, TaskReader } from '@writ/credentials';
import { ConnectorDetail, ConnectorOperation, PG_POOL } from '@writ/database';
import { newJti, SigningKeyStore } from '@writ/keys';
import { OAuthError, parseAuthorizationDetails } from '@writ/oauth';
import { FieldError, NotFoundError, ValidationFailedError } from '@writ/platform';
import { TASK_TOKEN_TYP } from '../exchange/task-token';
import type { CreateTaskDto } from './dto/create-task.dto';
import type { CreatedTaskDto } from './dto/created-task.dto';
import type { OrchestratorPrincipal } from './orchestrator-bearer.guard';

const MAX_METADATA_BYTES = 4096;

/** Checks a declared constraint value against its operator. */
function constraintTypeError(op: string, value: unknown): string | undefined {
  const scalar = (v: unknown) => typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
  switch (op) {
    case 'lte':
    case 'gte':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : `must be a number (operator ${op})`;
    case 'in':
      return Array.isArray(value) && value.length > 0 && value.every(scalar) ? undefined : 'must be a non-empty array (operator in)';
    default:
      return scalar(value) ? undefined : 'must be a string, number or boolean (operator eq)';
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
  ) {
    this.reader = new TaskReader(pool);
  }

  /** Declares a task and returns its task token (shown once). */
  async create(orchestrator: OrchestratorPrincipal, body: CreateTaskDto): Promise<CreatedTaskDto> {
    const fields: FieldError[] = [];
    if (!orchestrator.allowedAgents.includes('*') && !orchestrator.allowedAgents.includes(body.agent_id)) {
      fields.push({ field: 'agent_id', message: 'this orchestrator may not create tasks for that agent' });
    }
    const agent = await this.pool.query('SELECT status FROM agents WHERE id = $1', [body.agent_id]);
    if (!agent.rows[0]) fields.push({ field: 'agent_id', message: 'no such agent' });
    else if (agent.rows[0].status !== 'active') fields.push({ field: 'agent_id', message: 'the agent is suspended' });
    if (body.metadata && Buffer.byteLength(JSON.stringify(body.metadata)) > MAX_METADATA_BYTES) {
      fields.push({ field: 'metadata', message: `must be at most ${MAX_METADATA_BYTES} bytes of JSON` });
    }
    const allowed = await this.validateAllowed(body.allowed, fields);
    if (fields.length > 0) throw new ValidationFailedError(fields, 'the task declaration is invalid');

    const id = randomUUID();
    const jti = newJti();
    const now = Math.floor(Date.now() / 1000);
    const exp = now + body.ttl_seconds;
    const taskToken = await this.keys.sign(
      { sub: body.agent_id, aud: this.config.issuer, task_id: id, jti, iat: now, exp, client_id: orchestrator.id },
      { typ: TASK_TOKEN_TYP },
    );
    const expiresAt = new Date(exp * 1000);
    await this.audit.recordWith(
      async (client) => {
        await client.query(
          `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, task_token_jti, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, to_timestamp($9), $10)`,
          [id, body.agent_id, orchestrator.id, body.purpose, JSON.stringify(allowed), body.on_behalf_of ?? null,
            JSON.stringify(body.metadata ?? {}), jti, now, expiresAt],
        );
      },
      () => [{
        type: 'task.created',
        outcome: 'success',
        actor: { type: 'orchestrator', id: orchestrator.id },
        agentId: body.agent_id,
        taskId: id,
        data: { purpose: body.purpose, allowed, ttl_seconds: body.ttl_seconds, expires_at: expiresAt.toISOString(), on_behalf_of: body.on_behalf_of ?? null, metadata: body.metadata ?? {} },
      }],
    );
    return { task_id: id, task_token: taskToken, expires_at: expiresAt.toISOString(), status: 'active' };
  }

  /** A task of this orchestrator, with its grants. */
  async get(orchestrator: OrchestratorPrincipal, id: string): Promise<TaskDto> {
    const task = await this.reader.get(id, orchestrator.id);
    if (!task) throw new NotFoundError('task');
    return task;
  }

  /** Ends a task (`completed` or `failed`), revoking every credential before answering. */
  async end(orchestrator: OrchestratorPrincipal, id: string, status: 'completed' | 'failed'): Promise<TaskDto> {
    await this.get(orchestrator, id);
    await this.revoker.endTask(id, status, `${status} by orchestrator`, { type: 'orchestrator', id: orchestrator.id });
    return this.get(orchestrator, id);
  }

  private async validateAllowed(raw: unknown[], fields: FieldError[]): Promise<ConnectorDetail[]> {
    let details: ConnectorDetail[];
    try {
      details = parseAuthorizationDetails(raw, { maxEntries: 20 }) as ConnectorDetail[];
    } catch (error) {
      fields.push({ field: 'allowed', message: error instanceof OAuthError ? error.description : 'invalid authorization_details' });
      return [];
    }
    const ids = [...new Set(details.map((detail) => detail.connector))];
    const { rows } = await this.pool.query(`SELECT id, operations FROM connectors WHERE id = ANY($1::text[])`, [ids]);
    const catalogue = new Map<string, ConnectorOperation[]>(rows.map((row) => [row.id, row.operations]));
    details.forEach((detail, index) => {
      const operations = catalogue.get(detail.connector);
      if (!operations) {
        fields.push({ field: `allowed[${index}].connector`, message: `no connector "${detail.connector}" is registered` });
        return;
      }
      const listed = detail.actions.map((action) => operations.find((operation) => operation.name === action));
      listed.forEach((operation, actionIndex) => {
        if (!operation) fields.push({ field: `allowed[${index}].actions[${actionIndex}]`, message: `connector ${detail.connector} has no operation "${detail.actions[actionIndex]}"` });
      });
      for (const [name, value] of Object.entries(detail.constraints ?? {})) {
        const binding = listed.map((operation) => operation?.constraints?.[name]).find(Boolean);
        if (!binding) {
          fields.push({ field: `allowed[${index}].constraints.${name}`, message: 'no listed operation defines this constraint' });
          continue;
        }
        const problem = constraintTypeError(binding.op, value);
        if (problem) fields.push({ field: `allowed[${index}].constraints.${name}`, message: problem });
      }
    });
    return details;
  }
}
