import { randomUUID } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import {
  CONNECTOR_INTEGRITY_COLUMNS,
  connectorIntegrityFieldsOf,
  type ConnectorIntegrityRow,
  POLICY_INTEGRITY_COLUMNS,
  policyIntegrityFieldsOf,
  type PolicyIntegrityRow,
  RowIntegrity,
  TASK_INTEGRITY_COLUMNS,
  taskIntegrityFieldsOf,
  type TaskIntegrityRow,
} from '@writ/grants';
import { MasterKey } from '@writ/keys';

/**
 * Fixtures that write the rows that grant authority (agents, orchestrators, tasks) directly, as
 * Writ would: with their integrity tag (see `libs/grants/src/row-integrity.ts`). A row inserted
 * without one is refused like a row a database administrator forged.
 */

type Queryable = Pick<Pool | PoolClient, 'query'>;

/** The {@link RowIntegrity} of a runtime's pool (registered by the suites' service starter), so fixtures given a pool tag under its master key. */
const byPool = new WeakMap<object, RowIntegrity>();

/** Registers the row integrity to tag `pool`'s fixtures with. */
export function rememberRowIntegrity(pool: object, integrity: RowIntegrity): void {
  byPool.set(pool, integrity);
}

/** The row integrity registered for `pool` (throws: a fixture never writes an untagged row by accident). */
export function rowIntegrityOf(pool: object): RowIntegrity {
  const integrity = byPool.get(pool);
  if (!integrity) throw new Error('no RowIntegrity registered for this pool (rememberRowIntegrity)');
  return integrity;
}

/** A row integrity under a fresh random master key (specs with their own database). */
export function testRowIntegrity(masterKey: MasterKey = new MasterKey(Buffer.alloc(32, 7))): RowIntegrity {
  return new RowIntegrity(masterKey);
}

/** Inserts an agent with its tag. */
export async function insertAgentRow(
  db: Queryable,
  integrity: RowIntegrity,
  agent: { id: string; name?: string; status?: 'active' | 'suspended'; jwks: unknown },
): Promise<void> {
  const status = agent.status ?? 'active';
  await db.query(`INSERT INTO agents (id, name, status, jwks, integrity_tag) VALUES ($1, $2, $3, $4, $5)`, [
    agent.id,
    agent.name ?? agent.id,
    status,
    JSON.stringify(agent.jwks),
    integrity.tagClient('agents', { id: agent.id, status, jwks: agent.jwks }),
  ]);
}

/** Inserts an orchestrator with its tag. */
export async function insertOrchestratorRow(
  db: Queryable,
  integrity: RowIntegrity,
  orchestrator: { id: string; name?: string; status?: 'active' | 'suspended'; jwks: unknown; allowedAgents: string[] },
): Promise<void> {
  const status = orchestrator.status ?? 'active';
  await db.query(`INSERT INTO orchestrators (id, name, status, jwks, allowed_agents, integrity_tag) VALUES ($1, $2, $3, $4, $5, $6)`, [
    orchestrator.id,
    orchestrator.name ?? orchestrator.id,
    status,
    JSON.stringify(orchestrator.jwks),
    orchestrator.allowedAgents,
    integrity.tagClient('orchestrators', { id: orchestrator.id, status, jwks: orchestrator.jwks, allowedAgents: orchestrator.allowedAgents }),
  ]);
}

/** A task row as a fixture writes it (defaults: active, one hour left, nothing allowed). */
export interface TaskRowFixture {
  id?: string;
  agentId: string;
  orchestratorId: string;
  purpose?: string;
  allowed?: unknown[];
  onBehalfOf?: string | null;
  metadata?: Record<string, unknown>;
  status?: string;
  taskTokenJti?: string;
  refusals?: number;
  createdAt?: Date;
  expiresAt?: Date;
}

/** Inserts a task with its tag; returns its id. */
export async function insertTaskRow(db: Queryable, integrity: RowIntegrity, task: TaskRowFixture): Promise<string> {
  const id = task.id ?? randomUUID();
  // Whole milliseconds, as `pg` reads them back.
  const createdAt = new Date(Math.floor((task.createdAt ?? new Date()).getTime()));
  const expiresAt = new Date(Math.floor((task.expiresAt ?? new Date(Date.now() + 3_600_000)).getTime()));
  const fields = {
    id,
    agentId: task.agentId,
    orchestratorId: task.orchestratorId,
    purpose: task.purpose ?? 'spec',
    allowed: task.allowed ?? [],
    onBehalfOf: task.onBehalfOf ?? null,
    userIssuer: null,
    userSubject: null,
    metadata: task.metadata ?? {},
    taskTokenJti: task.taskTokenJti ?? randomUUID(),
    createdAt,
    expiresAt,
  };
  await db.query(
    `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, task_token_jti, refusals, created_at, expires_at, integrity_tag)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
    [
      id,
      fields.agentId,
      fields.orchestratorId,
      fields.purpose,
      JSON.stringify(fields.allowed),
      fields.onBehalfOf,
      JSON.stringify(fields.metadata),
      task.status ?? 'active',
      fields.taskTokenJti,
      task.refusals ?? 0,
      createdAt,
      expiresAt,
      integrity.tagTask(fields),
    ],
  );
  return id;
}

/**
 * Tags a row again as it now stands: a fixture's direct change of a tagged column (a suspension,
 * an earlier deadline) made as if Writ had written it. Without it the row is refused as forged.
 */
export async function retagRow(
  db: Queryable,
  integrity: RowIntegrity,
  table: 'tasks' | 'agents' | 'orchestrators' | 'admin_tokens',
  id: string,
): Promise<void> {
  if (table === 'admin_tokens') {
    const { rows } = (await db.query('SELECT id, role, token_hash, expires_at FROM admin_tokens WHERE id = $1', [id])) as {
      rows: Array<{ id: string; role: string; token_hash: string; expires_at: Date | null }>;
    };
    const row = rows[0];
    if (!row) throw new Error(`no admin token ${id}`);
    const tag = integrity.tagAdminToken({ id: row.id, role: row.role, tokenHash: row.token_hash, expiresAt: row.expires_at });
    await db.query('UPDATE admin_tokens SET integrity_tag = $2 WHERE id = $1', [id, tag]);
    return;
  }
  if (table === 'tasks') {
    const { rows } = (await db.query(`SELECT ${TASK_INTEGRITY_COLUMNS} FROM tasks WHERE id = $1`, [id])) as {
      rows: Array<Omit<TaskIntegrityRow, 'integrity_tag'>>;
    };
    const row = rows[0];
    if (!row) throw new Error(`no task ${id}`);
    const tag = integrity.tagTask(taskIntegrityFieldsOf(row));
    await db.query('UPDATE tasks SET integrity_tag = $2 WHERE id = $1', [id, tag]);
    return;
  }
  const { rows } = (await db.query(`SELECT id, status, jwks${table === 'orchestrators' ? ', allowed_agents' : ''} FROM ${table} WHERE id = $1`, [id])) as {
    rows: Array<{ id: string; status: string; jwks: unknown; allowed_agents?: string[] }>;
  };
  const row = rows[0];
  if (!row) throw new Error(`no ${table} row ${id}`);
  const tag = integrity.tagClient(table, {
    id: row.id,
    status: row.status,
    jwks: row.jwks,
    ...(row.allowed_agents ? { allowedAgents: row.allowed_agents } : {}),
  });
  await db.query(`UPDATE ${table} SET integrity_tag = $2 WHERE id = $1`, [id, tag]);
}

/** Tags a connector row as it now stands, as Writ does where it writes one (fixtures that insert or change connectors directly). */
export async function tagConnectorRow(db: Queryable, integrity: RowIntegrity, id: string): Promise<void> {
  const { rows } = await db.query<ConnectorIntegrityRow>(`SELECT ${CONNECTOR_INTEGRITY_COLUMNS} FROM connectors WHERE id = $1`, [id]);
  if (!rows[0]) throw new Error(`no connector ${id}`);
  await db.query('UPDATE connectors SET integrity_tag = $2 WHERE id = $1', [id, integrity.tagConnector(connectorIntegrityFieldsOf(rows[0]))]);
}

/** Inserts a trusted identity provider with its tag, as the admin API registers one. */
export async function insertIdentityProviderRow(
  db: Queryable,
  integrity: RowIntegrity,
  provider: { issuer: string; jwksUri: string; audience?: string; assertingOrchestrators?: string[] },
): Promise<void> {
  const fields = {
    issuer: provider.issuer,
    jwksUri: provider.jwksUri,
    audience: provider.audience ?? 'writ',
    assertingOrchestrators: provider.assertingOrchestrators ?? [],
  };
  await db.query(`INSERT INTO identity_providers (issuer, jwks_uri, audience, asserting_orchestrators, integrity_tag) VALUES ($1, $2, $3, $4, $5)`, [
    fields.issuer,
    fields.jwksUri,
    fields.audience,
    fields.assertingOrchestrators,
    integrity.tagIdentityProvider(fields),
  ]);
}

/** Tags the active stored policy as it now stands, as Writ does when it activates one (fixtures that store a policy directly). */
export async function tagActivePolicyRow(db: Queryable, integrity: RowIntegrity): Promise<void> {
  const { rows } = await db.query<PolicyIntegrityRow>(`SELECT ${POLICY_INTEGRITY_COLUMNS} FROM policies WHERE active`);
  if (!rows[0]) throw new Error('no active policy');
  await db.query('UPDATE policies SET integrity_tag = $2 WHERE version = $1', [rows[0].version, integrity.tagPolicy(policyIntegrityFieldsOf(rows[0]))]);
}
