import type { PoolClient } from 'pg';
import type { ConnectorOperation } from '@writ/database';

const TOKEN_COLUMNS = `jti, kind, client_id, subject, task_id, connector_id, action, risk,
  authorization_details, scope, policy_version, max_uses, issued_at, expires_at, cnf_jkt, budget_entries`;

/**
 * One row of `access_tokens` as the batched insert takes it, in {@link TOKEN_COLUMNS} order,
 * then the operation definition the issuance was decided on (`null` for Tasks API tokens).
 */
export type CredentialRow = [
  jti: string,
  kind: string,
  clientId: string,
  subject: string,
  taskId: string | null,
  connectorId: string | null,
  action: string | null,
  risk: string | null,
  authorizationDetails: string | null,
  scope: string | null,
  policyVersion: string | null,
  maxUses: number | null,
  issuedAt: number,
  expiresAt: number,
  cnfJkt: string | null,
  budgetEntries: string | null,
  decidedOperation: string | null,
];

/** What became of one credential of a batch: written, or not because its task/agent ended or its operation changed. */
export type IssueOutcome = 'recorded' | 'ended' | 'catalogue_changed';

/**
 * The part of an operation whose change revokes its credentials (see the catalogue PATCH):
 * method, path and constraints. An issuance records its credential only if this is still what
 * the catalogue says when the credential's row is written.
 */
export function decidedOperation(operation: Pick<ConnectorOperation, 'method' | 'path' | 'constraints'>): string {
  // null, not undefined: an MCP tool has no method or path, and jsonb_build_object gives null for them.
  return JSON.stringify({ method: operation.method ?? null, path: operation.path ?? null, constraints: operation.constraints ?? {} });
}

const UNNEST_TOKENS = `SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
  $8::text[], $9::jsonb[], $10::text[], $11::text[], $12::int[], $13::float8[], $14::float8[], $15::text[], $16::text[], $17::jsonb[])
  AS u(jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version, max_uses, iat, exp, cnf_jkt,
       budget_entries, decided_operation)`;

/**
 * Inserts every connector credential of an audit batch in one statement. A credential is
 * recorded only if, at commit, its agent is active, its task active and before its deadline,
 * and its operation's method, path and constraints still those it was decided on. The agent
 * and task rows are share-locked, so a concurrent suspension or task end waits for this commit
 * and then revokes these credentials too; the connector row is key-share-locked, so a
 * catalogue PATCH or deletion (which locks it `FOR UPDATE`) either waits for this commit and
 * then revokes these credentials, or commits first and this statement, re-reading the locked
 * row, sees the changed operation and records nothing.
 */
const INSERT_CONNECTOR_TOKENS = `
  WITH input AS (${UNNEST_TOKENS}),
       live AS (SELECT i.*, EXISTS (
                         SELECT 1 FROM jsonb_array_elements(c.operations) op
                          WHERE op->>'name' = i.action
                            -- MCP tools have no method or path: null on both sides (see decidedOperation()).
                            AND jsonb_build_object('method', op->'method', 'path', op->'path',
                                                   'constraints', COALESCE(op->'constraints', '{}'::jsonb)) = i.decided_operation
                       ) AS current_operation
                  FROM input i
                  JOIN agents a ON a.id = i.subject AND a.status = 'active'
                  JOIN tasks t ON t.id = i.task_id AND t.status = 'active' AND t.expires_at > now()
                  JOIN connectors c ON c.id = i.connector_id
                   FOR SHARE OF a, t FOR KEY SHARE OF c),
       inserted AS (
         INSERT INTO access_tokens (${TOKEN_COLUMNS})
         SELECT jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
                max_uses, to_timestamp(iat), to_timestamp(exp), cnf_jkt, budget_entries::smallint[] FROM live WHERE current_operation
         RETURNING jti)
  SELECT i.jti, CASE WHEN n.jti IS NOT NULL THEN 'recorded' WHEN l.jti IS NOT NULL THEN 'catalogue_changed' ELSE 'ended' END AS outcome
    FROM input i LEFT JOIN live l ON l.jti = i.jti LEFT JOIN inserted n ON n.jti = i.jti`;

/** Inserts every Tasks API token of an audit batch in one statement. */
const INSERT_TASKS_TOKENS = `
  INSERT INTO access_tokens (${TOKEN_COLUMNS})
  SELECT jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
         max_uses, to_timestamp(iat), to_timestamp(exp), cnf_jkt, budget_entries::smallint[] FROM (${UNNEST_TOKENS}) u
  RETURNING jti, 'recorded' AS outcome`;

/** Runs a batched insert; one outcome per row, in order. */
function insertCredentials(name: string, sql: string) {
  return async (client: PoolClient, rows: CredentialRow[]): Promise<IssueOutcome[]> => {
    const columns = Array.from({ length: 17 }, (_, column) => rows.map((row) => row[column]));
    const { rows: written } = await client.query<{ jti: string; outcome: IssueOutcome }>({ name, text: sql, values: columns });
    const outcomes = new Map(written.map((row) => [row.jti, row.outcome]));
    return rows.map((row) => outcomes.get(row[0]) ?? 'ended');
  };
}

/**
 * `issueCredential`: writes connector credentials (a batch of one audit transaction) in one
 * statement, each only if its task, agent and operation are still those it was decided on.
 * Named: each connection prepares (parses and plans) it once.
 */
export const issueConnectorCredentials = insertCredentials('writ_insert_connector_tokens', INSERT_CONNECTOR_TOKENS);

/** Writes Tasks API tokens (a batch of one audit transaction) in one statement. */
export const issueTasksTokens = insertCredentials('writ_insert_tasks_tokens', INSERT_TASKS_TOKENS);
