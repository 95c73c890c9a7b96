import type { PoolClient } from 'pg';
import { type ConnectorOperation, executeStatement, type SessionStatement, sqlArrayLiteral } from '@writ/database';

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
  /**
   * The `version` of the client's registration (agent or orchestrator row) the request was
   * authenticated against: nothing is recorded, and the assertion's `jti` is not spent, when
   * the registration changed since (`client_changed`: authenticate again on fresh data).
   */
  clientVersion: string,
  /**
   * Whether the policy that decided (`policyVersion`) was the stored one the instance had
   * installed (then it must still be the active stored policy), or its own file (then no other
   * stored policy may be active). `false` for Tasks API tokens (no policy).
   */
  policyStored: boolean,
  /**
   * The `jti` of the client assertion that authenticated the request, spent in the same
   * statement (connector credentials only; `null` when it was spent before).
   */
  assertionJti?: string | null,
  /** Until when that jti is kept (epoch seconds). */
  assertionJtiExpiresAt?: number | null,
];

/**
 * What became of one credential of a batch: written, or not because its task/agent ended or
 * its operation changed, or because its client assertion's `jti` was already spent (a replay),
 * or because what the request was authenticated or decided with is no longer current: the
 * client's registration changed (`client_changed`) or another policy was activated
 * (`policy_changed`); then nothing of it is recorded, its assertion's `jti` is not spent, and
 * the request is to be authenticated and decided again.
 */
export type IssueOutcome = 'recorded' | 'ended' | 'catalogue_changed' | 'replayed' | 'client_changed' | 'policy_changed';

/**
 * What a connector credential is decided on: the operation's method, path and constraints (whose
 * change revokes its credentials, see the catalogue PATCH), and the connector's `version` as read
 * with the catalogue the policy saw (every operation's risk, the connector's name and credential
 * type: policy input too). An issuance records its credential only if both are still what the
 * connector row says when the credential's row is written: a decision made on a catalogue copy
 * not yet dropped (its change being notified) is made again, whatever part of the row changed.
 */
export function decidedOperation(operation: Pick<ConnectorOperation, 'method' | 'path' | 'constraints'>, connectorVersion: string): string {
  // null, not undefined: an MCP tool has no method or path, and jsonb_build_object gives null for them.
  return JSON.stringify({
    method: operation.method ?? null,
    path: operation.path ?? null,
    constraints: operation.constraints ?? {},
    connector_version: connectorVersion,
  });
}

/**
 * Whether the policy that decided (`policy_version`, `policy_stored`) is the one in force now: a
 * stored policy must still be the active one; a file policy is in force while no stored policy
 * is active (or the active one is the same version). Files are per instance: two instances
 * with different files both issue under their own, as they always have.
 */
const POLICY_IN_FORCE = `CASE WHEN i.policy_stored
    THEN EXISTS (SELECT 1 FROM policies p WHERE p.active AND p.version = i.policy_version)
    ELSE NOT EXISTS (SELECT 1 FROM policies p WHERE p.active AND p.version IS DISTINCT FROM i.policy_version) END`;

const UNNEST_TOKENS = `SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
  $8::text[], $9::jsonb[], $10::text[], $11::text[], $12::int[], $13::float8[], $14::float8[], $15::text[], $16::text[], $17::jsonb[], $18::bigint[])
  AS u(jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version, max_uses, iat, exp, cnf_jkt,
       budget_entries, decided_operation, client_version)`;

/**
 * Inserts every connector credential of an audit batch in one statement. A credential is
 * recorded only if its agent's registration is the version the request was authenticated
 * against (share-locked: an admin change either waits for this commit or, committed first,
 * makes this statement spend and record nothing for it, `client_changed`), the active stored
 * policy (if any) the one it was decided with (`policy_changed`, nothing spent either), and,
 * at commit, its agent is active, its task active and before its deadline,
 * and its operation's method, path and constraints still those it was decided on. The agent
 * and task rows are share-locked, so a concurrent suspension or task end waits for this commit
 * and then revokes these credentials too; the connector row is key-share-locked, so a
 * catalogue PATCH or deletion (which locks it `FOR UPDATE`) either waits for this commit and
 * then revokes these credentials, or commits first and this statement, re-reading the locked
 * row, sees the changed operation and records nothing.
 */
const CONNECTOR_TOKENS_WRITTEN = `
  WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[],
                   $8::text[], $9::jsonb[], $10::text[], $11::text[], $12::int[], $13::float8[], $14::float8[], $15::text[], $16::text[], $17::jsonb[],
                   $18::bigint[], $19::bool[], $20::text[], $21::float8[])
                   AS u(jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version, max_uses,
                        iat, exp, cnf_jkt, budget_entries, decided_operation, client_version, policy_stored, assertion_jti, assertion_exp)),
       -- Authenticated against the current registration: locked, so that a change waits for this
       -- commit or, committed first, is seen here (the row is re-read under the lock).
       authenticated AS (SELECT i.* FROM input i JOIN agents a ON a.id = i.client_id AND a.version = i.client_version FOR SHARE OF a),
       -- Decided by the policy in force: the active stored one, or (none active) the instance's file.
       decided AS (SELECT i.* FROM authenticated i WHERE ${POLICY_IN_FORCE}),
       -- The client assertion jtis, spent here whatever becomes of the credential (unless it is to
       -- be authenticated or decided again): a jti another transaction inserts concurrently makes
       -- this insert wait for it, then skip the row.
       spent AS (
         INSERT INTO client_assertion_jtis (client_id, jti, expires_at)
         SELECT client_id, assertion_jti, to_timestamp(assertion_exp) FROM decided WHERE assertion_jti IS NOT NULL
         ON CONFLICT DO NOTHING
         RETURNING client_id, jti),
       fresh AS (SELECT i.* FROM decided i
                  WHERE i.assertion_jti IS NULL OR EXISTS (SELECT 1 FROM spent s WHERE s.client_id = i.client_id AND s.jti = i.assertion_jti)),
       live AS (SELECT i.*, EXISTS (
                         SELECT 1 FROM jsonb_array_elements(c.operations) op
                          WHERE op->>'name' = i.action
                            -- MCP tools have no method or path: null on both sides (see decidedOperation()).
                            AND jsonb_build_object('method', op->'method', 'path', op->'path',
                                                   'constraints', COALESCE(op->'constraints', '{}'::jsonb),
                                                   'connector_version', c.version::text) = i.decided_operation
                       ) AS current_operation
                  FROM fresh i
                  JOIN agents a ON a.id = i.subject AND a.status = 'active'
                  JOIN tasks t ON t.id = i.task_id AND t.status = 'active' AND t.expires_at > now()
                  JOIN connectors c ON c.id = i.connector_id
                   FOR SHARE OF a, t FOR KEY SHARE OF c),
       inserted AS (
         INSERT INTO access_tokens (${TOKEN_COLUMNS})
         SELECT jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
                max_uses, to_timestamp(iat), to_timestamp(exp), cnf_jkt, budget_entries::smallint[] FROM live WHERE current_operation
         RETURNING jti)`;

/** Each credential's outcome, from the CTEs of {@link CONNECTOR_TOKENS_WRITTEN}. */
const CONNECTOR_TOKEN_OUTCOMES = `  SELECT i.jti, CASE WHEN n.jti IS NOT NULL THEN 'recorded' WHEN au.jti IS NULL THEN 'client_changed'
                      WHEN d.jti IS NULL THEN 'policy_changed' WHEN f.jti IS NULL THEN 'replayed'
                      WHEN l.jti IS NOT NULL THEN 'catalogue_changed' ELSE 'ended' END AS outcome
    FROM input i LEFT JOIN authenticated au ON au.jti = i.jti LEFT JOIN decided d ON d.jti = i.jti
         LEFT JOIN fresh f ON f.jti = i.jti LEFT JOIN live l ON l.jti = i.jti LEFT JOIN inserted n ON n.jti = i.jti`;

const INSERT_CONNECTOR_TOKENS = `${CONNECTOR_TOKENS_WRITTEN}
${CONNECTOR_TOKEN_OUTCOMES}`;

/**
 * Inserts every Tasks API token of an audit batch in one statement, each only if its
 * orchestrator's registration is the version the request was authenticated against
 * (share-locked, as for connector credentials); otherwise nothing is recorded for it
 * (`client_changed`, the default outcome of {@link insertCredentials} for this statement).
 */
const INSERT_TASKS_TOKENS = `
  INSERT INTO access_tokens (${TOKEN_COLUMNS})
  SELECT jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, policy_version,
         max_uses, to_timestamp(iat), to_timestamp(exp), cnf_jkt, budget_entries::smallint[]
    FROM (${UNNEST_TOKENS}) u JOIN orchestrators o ON o.id = u.client_id AND o.version = u.client_version
     FOR SHARE OF o
  RETURNING jti, 'recorded' AS outcome`;

/**
 * A batched insert of credentials, with parameters (`run`), as one `EXECUTE` in the audit
 * batch's locking message (`inline`), or in a batch sent as one message with its events
 * (`inline.expect`: fails with `writ_expect` unless every credential is recorded).
 */
export interface CredentialBatch {
  run: (client: PoolClient, rows: CredentialRow[]) => Promise<IssueOutcome[]>;
  inline: {
    statements: readonly SessionStatement[];
    sql: (rows: CredentialRow[]) => string;
    parse: (written: Array<Record<string, unknown>>, rows: CredentialRow[]) => IssueOutcome[];
    expect: {
      statements: readonly SessionStatement[];
      sql: (rows: CredentialRow[]) => string | undefined;
      expected: () => IssueOutcome;
    };
  };
}

/**
 * Most credentials a batch sent as one message holds. One message saves a round trip where a
 * batch is small (moderate load: one or two exchanges per batch, whose latency is the point);
 * with the batches of a saturated token endpoint (about fourteen) it cost ~5% of the
 * maximum in four alternated runs (`bench/exchange-ab.ts`), so those take two round trips.
 */
const ONE_MESSAGE_MAX_CREDENTIALS = 4;

/**
 * A credential statement that writes as `written` does (CTEs; `outcomes`: each row's outcome,
 * `recorded` or another) and then fails unless every row of the batch (`$<count>`) was
 * recorded. The outcomes are read as the statement without the check reads them, so that
 * PostgreSQL plans the writing CTEs the same way (materialised, not inlined into the check).
 */
function expectAllRecorded(written: string, countParameter: number): string {
  return `${written}
  SELECT writ_expect((SELECT count(*) FROM outcomes WHERE outcome = 'recorded'), $${countParameter}::bigint, 'the number of credentials recorded')`;
}

/**
 * A batched insert; one outcome per row, in order. A client assertion jti that two rows of the
 * batch carry is spent by the first only (one statement cannot tell which row's insert won).
 * Named: each connection prepares (parses and plans) it once, for `run` (protocol level) and
 * for `inline` (`PREPARE`, under its own name).
 */
function credentialBatch(name: string, sql: string, allRecorded: string, columnCount: number, missing: IssueOutcome): CredentialBatch {
  const statement: SessionStatement = { name: `${name}_s`, text: sql };
  const expecting: SessionStatement = { name: `${name}_x`, text: allRecorded };
  const replayedIn = (rows: CredentialRow[]): Set<CredentialRow> => {
    const assertions = new Set<string>();
    const replayed = new Set<CredentialRow>();
    for (const row of rows) {
      if (!row[19]) continue;
      const key = `${row[2]}\u0000${row[19]}`;
      if (assertions.has(key)) replayed.add(row);
      assertions.add(key);
    }
    return replayed;
  };
  const columnsOf = (rows: CredentialRow[], replayed: Set<CredentialRow>) => {
    const sent = replayed.size === 0 ? rows : rows.filter((row) => !replayed.has(row));
    return Array.from({ length: columnCount }, (_, column) => sent.map((row) => row[column] ?? null));
  };
  const outcomesOf = (rows: CredentialRow[], replayed: Set<CredentialRow>, written: Array<Record<string, unknown>>): IssueOutcome[] => {
    const outcomes = new Map(written.map((row) => [row.jti as string, row.outcome as IssueOutcome]));
    return rows.map((row) => (replayed.has(row) ? 'replayed' : (outcomes.get(row[0]) ?? missing)));
  };
  return {
    run: async (client, rows) => {
      const replayed = replayedIn(rows);
      const { rows: written } = await client.query<{ jti: string; outcome: IssueOutcome }>({ name, text: sql, values: columnsOf(rows, replayed) });
      return outcomesOf(rows, replayed, written);
    },
    inline: {
      statements: [statement],
      sql: (rows) => executeStatement(statement, columnsOf(rows, replayedIn(rows)).map(sqlArrayLiteral)),
      parse: (written, rows) => outcomesOf(rows, replayedIn(rows), written),
      expect: {
        statements: [expecting],
        // A batch that carries one assertion twice has an outcome other than `recorded`; a
        // large batch is written in two round trips (see ONE_MESSAGE_MAX_CREDENTIALS).
        sql: (rows) =>
          rows.length > ONE_MESSAGE_MAX_CREDENTIALS || replayedIn(rows).size > 0
            ? undefined
            : executeStatement(expecting, [...columnsOf(rows, new Set()).map(sqlArrayLiteral), String(rows.length)]),
        expected: () => 'recorded',
      },
    },
  };
}

/**
 * `issueCredential`: writes connector credentials (a batch of one audit transaction) in one
 * statement, each only if its task, agent and operation are still those it was decided on.
 */
export const connectorCredentials = credentialBatch(
  'writ_insert_connector_tokens',
  INSERT_CONNECTOR_TOKENS,
  expectAllRecorded(`${CONNECTOR_TOKENS_WRITTEN}, outcomes AS (${CONNECTOR_TOKEN_OUTCOMES})`, 22),
  21,
  'ended',
);

/**
 * Writes Tasks API tokens (a batch of one audit transaction) in one statement; a row not
 * written is one whose orchestrator registration changed (`client_changed`).
 */
export const tasksTokens = credentialBatch(
  'writ_insert_tasks_tokens',
  INSERT_TASKS_TOKENS,
  expectAllRecorded(`WITH outcomes AS (${INSERT_TASKS_TOKENS})`, 19),
  18,
  'client_changed',
);

/** The client registration, policy and connector versions a token exchange was authenticated and decided with. */
export interface DecisionBasis {
  agentId: string;
  clientVersion: string;
  policyVersion: string;
  /** Whether that policy was the stored one (see {@link CredentialRow}'s `policyStored`). */
  policyStored: boolean;
  /** The connectors whose catalogues the policy saw, at the `version` each was read at. */
  connectors: ReadonlyArray<{ id: string; version: string }>;
}

/**
 * In the caller's transaction, before a refusal or an approval request is recorded: `client`
 * when the agent's registration changed since the request was authenticated (otherwise it is
 * share-locked until commit: a change waits), `policy` when another stored policy is active
 * than the one that decided, `catalogue` when a connector the policy saw is no longer at the
 * version it was read at (changed or deleted); `undefined` when all are current. The same
 * checks as the issuing statement's, for what a request records without a credential.
 */
export async function staleDecision(client: PoolClient, basis: DecisionBasis): Promise<'client' | 'policy' | 'catalogue' | undefined> {
  const { rows } = await client.query<{ client_current: boolean; policy_current: boolean; catalogue_current: boolean }>({
    name: 'writ_decision_current',
    text: `WITH a AS (SELECT version FROM agents WHERE id = $1 FOR SHARE),
                i AS (SELECT $3::text AS policy_version, $4::bool AS policy_stored)
           SELECT coalesce((SELECT version = $2::bigint FROM a), false) AS client_current,
                  (SELECT ${POLICY_IN_FORCE} FROM i) AS policy_current,
                  NOT EXISTS (SELECT 1 FROM unnest($5::text[], $6::bigint[]) AS h(id, version)
                                LEFT JOIN connectors c ON c.id = h.id
                               WHERE c.version IS DISTINCT FROM h.version) AS catalogue_current`,
    values: [
      basis.agentId,
      basis.clientVersion,
      basis.policyVersion,
      basis.policyStored,
      basis.connectors.map((connector) => connector.id),
      basis.connectors.map((connector) => connector.version),
    ],
  });
  if (!rows[0].client_current) return 'client';
  if (!rows[0].policy_current) return 'policy';
  return rows[0].catalogue_current ? undefined : 'catalogue';
}
