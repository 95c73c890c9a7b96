import { Inject, Injectable } from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import { executeStatement, PG_POOL, SessionStatement, sqlArrayLiteral } from '@writ/database';
import { BudgetReservation, GrantStore, ReserveOutcome } from './grant-store';
import { RowIntegrity, taskIntegrityFieldsOf, type TaskIntegrityRow } from './row-integrity';
import { type BudgetRule, budgetRules, type DeclaredEntry, declaredActions } from './task-limits';

/** A connector as the gateway checks and forwards a call to it. */
export interface GatewayConnector {
  id: string;
  /** `http`, or `mcp` for a Streamable HTTP MCP server (operations are tools). */
  kind: 'http' | 'mcp';
  baseUrl: string;
  operationsText: string;
  credentialType: string | null;
  credentialSealed: Buffer | null;
  credentialFingerprint: string | null;
  /**
   * The row's `version` (moved on by a trigger on every change): the statement that spends a
   * call's use also checks that the connector is still at this version.
   */
  version: string;
}

/** What the gateway needs about a credential, its task and its connector, read in one query. */
export interface CredentialState {
  jti: string;
  taskId: string | null;
  /**
   * Indexes of the task's limited `allowed` entries this credential's calls are charged to; null:
   * none. As read from the row (not tagged): the gateway takes the token's signed
   * `budget_entries` claim instead when it has one (see `boundBySignedClaims`).
   */
  budgetEntries: number[] | null;
  /**
   * The budget rules the task declared (its `limits`, from the verified task row: empty when it
   * declares none or does not verify). A reservation bounds each budget row's maximum by these.
   */
  declaredBudgets: BudgetRule[];
  /**
   * The actions the task declared on this credential's connector (from the verified task row:
   * empty when it does not verify): what `tools/list` shows an MCP client of the task.
   */
  declaredActions: string[];
  revoked: boolean;
  expired: boolean;
  uses: number;
  /** As read from the row (not tagged): the gateway bounds it by the token's signed `max_uses` claim. */
  maxUses: number | null;
  taskStatus: string | null;
  taskExpired: boolean;
  /** The verified user the task acts for, or null. */
  taskUser: { issuer: string; subject: string } | null;
  connector: GatewayConnector | null;
  /** When the credential and its task expire (ms since the epoch; the task's null when there is none). */
  expiresAtMs: number;
  taskExpiresAtMs: number | null;
  /**
   * True when assembled from the gateway's memory instead of read now: revocation, the task's
   * status and uses were not read (the spending statement checks them, atomically).
   */
  remembered?: boolean;
}

/**
 * The verdict of the statement that spends a call (or re-checks a credential without a use
 * budget) in the audit transaction: `live` (spent, or still good), `stale` (the credential is
 * good but its connector changed since the call was checked: check it again), `dead`
 * (revoked, expired, spent, or its task ended).
 */
export type SpendVerdict = 'live' | 'stale' | 'dead';

/** One call's credential to re-check or spend, with the connector version the call was checked against (null: any). */
export interface RecheckParams {
  jti: string;
  connectorVersion: string | null;
}

/** A use-limited call to spend, with what the caller expects of it, if it can tell (see `spendInline.expect`). */
export interface SpendParams extends RecheckParams {
  /** The uses its credential should count once this call is spent; absent: its batch takes two round trips. */
  expectedUses?: number;
  /**
   * The credential's use limit as checked (bounded by its token's signed claim): the statement
   * spends no use past it whatever the row's `max_uses` says. Absent or null: the row's alone.
   */
  maxUses?: number | null;
}

const LOAD = `
  SELECT t.jti, t.task_id, t.budget_entries, t.revoked_at IS NOT NULL AS revoked,
         t.expires_at <= now() AS expired, GREATEST(t.uses, 0) AS uses, t.max_uses,
         k.status AS task_status, k.expires_at <= now() AS task_expired, k.user_issuer, k.user_subject,
         c.id AS c_id, c.kind AS c_kind, c.base_url, c.operations::text AS operations_text,
         c.credential_type, c.credential_sealed, c.credential_fingerprint, c.version::text AS c_version, c.integrity_tag AS c_integrity_tag,
         (extract(epoch FROM t.expires_at) * 1000)::float8 AS expires_at_ms,
         (extract(epoch FROM k.expires_at) * 1000)::float8 AS task_expires_at_ms,
         k.id AS k_id, k.agent_id AS k_agent_id, k.orchestrator_id AS k_orchestrator_id, k.purpose AS k_purpose, k.allowed AS k_allowed,
         k.on_behalf_of AS k_on_behalf_of, k.metadata AS k_metadata, k.task_token_jti AS k_task_token_jti, k.created_at AS k_created_at,
         k.expires_at AS k_expires_at, k.integrity_tag AS k_integrity_tag
    FROM access_tokens t
    LEFT JOIN tasks k ON k.id = t.task_id
    LEFT JOIN connectors c ON c.id = t.connector_id
   WHERE t.jti = $1 AND t.kind = 'connector'`;

// Credentials without a use budget are only re-checked, not written (a row updated on every
// read would become a hot spot for nothing), all those of one audit batch in one statement.
// It runs under the audit chain-head lock, so its plan must not depend on statistics: each
// `jti` is looked up by primary key (the fenced LATERAL), its task by primary key (the
// correlated subquery). Written as a plain join, PostgreSQL planned it from `tasks` through
// every credential of every active task while `access_tokens` had no statistics yet
// (6-15 ms with 10 000 credentials, held under the lock: docs/performance.md). `current`: the
// connector is still at the version the call was checked against (or none was given).
const RECHECK = `
  SELECT q.n::int AS n, (q.version IS NULL OR (SELECT c.version FROM connectors c WHERE c.id = t.connector_id) = q.version) AS current
    FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS q(jti, version, n)
   CROSS JOIN LATERAL (
         SELECT t.jti, t.task_id, t.connector_id FROM access_tokens t
          WHERE t.jti = q.jti AND t.revoked_at IS NULL AND t.expires_at > now()
         OFFSET 0) t
   WHERE (SELECT k.status = 'active' AND k.expires_at > now() FROM tasks k WHERE k.id = t.task_id)`;

// The spends of a batch's use-limited calls, in one statement, in the order of the calls.
// Each credential is looked up once, by primary key, and locked; calls of the same credential
// are taken in order (`n`): a call whose connector is at the version it was checked against
// spends a use while any is left (`live`, with the uses counted after it; the limit is the
// row's bounded by the one the call was checked with, `$3`, which the token signs), one whose connector
// moved on is `stale` while uses are left (checked again), anything else is `dead`; the uses
// spent are then added per credential. Two calls of one batch can carry the same one-use
// credential: one is `live`, the other `dead`, as if each had its own statement. It runs only
// while the credential and its task are still good: a revocation that committed before it
// makes it spend nothing, on every instance. Same plan
// constraints as RECHECK (it runs under the chain-head lock). `spent`, a data-modifying WITH,
// runs to completion whether or not the final SELECT reads it.
// A row's `uses` below zero (not tagged, no constraint: a database administrator's edit) counts as
// zero: else one edit (`uses = -1000000`) would make a signed one-use credential a million-use
// one, which the signed `max_uses` is there to prevent.
const SPEND_WRITTEN = `
  WITH q AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[]) WITH ORDINALITY AS q(jti, version, signed_max, n)),
       c AS (SELECT t.jti, GREATEST(t.uses, 0) AS uses, t.max_uses, t.connector_id
               FROM (SELECT DISTINCT jti FROM q) d
              CROSS JOIN LATERAL (
                    SELECT t.jti, t.uses, t.max_uses, t.connector_id, t.task_id FROM access_tokens t
                     WHERE t.jti = d.jti AND t.revoked_at IS NULL AND t.expires_at > now()
                     OFFSET 0 FOR UPDATE) t
              WHERE (SELECT k.status = 'active' AND k.expires_at > now() FROM tasks k WHERE k.id = t.task_id)),
       -- The row's max_uses (not tagged) bounded by the one the call was checked with (signed).
       calls AS (SELECT q.n, q.jti, c.uses, LEAST(c.max_uses, q.signed_max) AS max_uses, c.jti IS NOT NULL AS good,
                        (q.version IS NULL OR (SELECT cn.version FROM connectors cn WHERE cn.id = c.connector_id) = q.version) AS current
                   FROM q LEFT JOIN c ON c.jti = q.jti),
       ranked AS (SELECT calls.*, COALESCE(count(*) FILTER (WHERE good AND current)
                           OVER (PARTITION BY jti ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS prior
                    FROM calls),
       verdicts AS (SELECT n, jti, max_uses, uses + prior + 1 AS uses_after,
                           CASE WHEN NOT good OR (max_uses IS NOT NULL AND uses + prior >= max_uses) THEN 'dead'
                                WHEN current THEN 'live' ELSE 'stale' END AS verdict
                      FROM ranked),
       spent AS (UPDATE access_tokens t SET uses = GREATEST(t.uses, 0) + s.k
                   FROM (SELECT jti, count(*)::int AS k FROM verdicts WHERE verdict = 'live' GROUP BY jti) s
                  WHERE t.jti = s.jti
                  RETURNING t.jti)`;

/** Each call's verdict, from the CTEs of {@link SPEND_WRITTEN}. */
const SPEND_VERDICTS = `SELECT v.n::int AS n, v.verdict, v.uses_after::int AS uses, v.max_uses
    FROM verdicts v
   ORDER BY v.n`;

const SPEND_BATCH = `${SPEND_WRITTEN}
  ${SPEND_VERDICTS}`;

/**
 * {@link RECHECK} for a batch sent as one message with its events (`BatchableWork.inline.expect`):
 * fails (`writ_expect`) unless every call (`$3` of them) is live on a current connector.
 */
const RECHECK_ALL_LIVE: SessionStatement = {
  name: 'writ_gateway_recheck_x',
  text: `SELECT writ_expect(count(*) FILTER (WHERE r.current), $3::bigint, 'the calls re-checked live') FROM (${RECHECK}) r`,
};

/**
 * {@link SPEND_BATCH} for a batch sent as one message with its events (`BatchableWork.inline.expect`):
 * fails (`writ_expect`) unless every call (`$5` of them) is live and leaves its credential at
 * the uses expected (`$4`, in call order). The verdicts are read as the plain statement reads them.
 */
const SPEND_AS_EXPECTED: SessionStatement = {
  name: 'writ_gateway_spend_batch_x',
  text: `${SPEND_WRITTEN}, outcomes AS (${SPEND_VERDICTS})
  SELECT writ_expect((SELECT count(*) FROM outcomes o JOIN unnest($4::int[]) WITH ORDINALITY AS e(uses, n) ON e.n = o.n
                       WHERE o.verdict = 'live' AND o.uses = e.uses), $5::bigint, 'the calls spent as expected')`,
};

/** {@link SPEND_BATCH}, prepared once per connection for the audit batch's locking message. */
const SPEND_BATCH_STATEMENT: SessionStatement = { name: 'writ_gateway_spend_batch_s', text: SPEND_BATCH };

/** One row of {@link SPEND_BATCH}. */
interface SpendRow {
  n: number;
  verdict: SpendVerdict;
  uses: number;
  max_uses: number | null;
}

/** What spending one call's use came to. */
export type SpendResult = { verdict: 'live'; uses: number; maxUses: number | null } | { verdict: 'stale' | 'dead' };

function spendResultsOf(rows: SpendRow[], checks: RecheckParams[]): SpendResult[] {
  const byPosition = new Map(rows.map((row) => [Number(row.n), row]));
  return checks.map((_check, index) => {
    const row = byPosition.get(index + 1);
    if (!row) throw new Error(`the batched spend returned no verdict for call ${index + 1}`);
    return row.verdict === 'live'
      ? { verdict: 'live', uses: Number(row.uses), maxUses: row.max_uses === null ? null : Number(row.max_uses) }
      : { verdict: row.verdict };
  });
}

/** The `$1` (jtis) and `$2` (connector versions) of a batch's checks, as array literals for `EXECUTE`. */
function checkLiterals(checks: RecheckParams[]): [string, string] {
  return [sqlArrayLiteral(checks.map((check) => check.jti)), sqlArrayLiteral(checks.map((check) => check.connectorVersion))];
}

/** {@link checkLiterals} and the `$3` (use limits as checked) of a batch's spends. */
function spendLiterals(checks: SpendParams[]): [string, string, string] {
  return [...checkLiterals(checks), sqlArrayLiteral(checks.map((check) => signedMaxOf(check)))];
}

/** A spend's use limit as checked, for `$3` (null: the row's alone). */
function signedMaxOf(check: SpendParams): number | null {
  return typeof check.maxUses === 'number' && Number.isInteger(check.maxUses) ? check.maxUses : null;
}

/** One row of {@link RECHECK}: the 1-based position of a live credential among the checks, and whether its connector is current. */
interface RecheckRow {
  n: number;
  current: boolean;
}

function verdictsOf(rows: RecheckRow[], checks: RecheckParams[]): SpendVerdict[] {
  const live = new Map(rows.map((row) => [row.n, row.current]));
  return checks.map((_check, index) => {
    const current = live.get(index + 1);
    return current === undefined ? 'dead' : current ? 'live' : 'stale';
  });
}

/** One row of {@link LOAD}. */
interface LoadRow {
  jti: string;
  task_id: string | null;
  budget_entries: number[] | null;
  revoked: boolean;
  expired: boolean;
  uses: number;
  max_uses: number | null;
  task_status: string | null;
  task_expired: boolean | null;
  user_issuer: string | null;
  user_subject: string | null;
  c_id: string | null;
  c_kind: 'http' | 'mcp' | null;
  base_url: string;
  operations_text: string;
  credential_type: string | null;
  credential_sealed: Buffer | null;
  credential_fingerprint: string | null;
  c_version: string | null;
  /** The connector's tag (its id, kind, base URL, catalogue and credential type), verified before the connector is used. */
  c_integrity_tag: string | null;
  expires_at_ms: number;
  task_expires_at_ms: number | null;
  /** The task's tagged columns (null without a task row), verified before its user is trusted. */
  k_id: string | null;
  k_agent_id: string;
  k_orchestrator_id: string;
  k_purpose: string;
  k_allowed: unknown;
  k_on_behalf_of: string | null;
  k_metadata: unknown;
  k_task_token_jti: string;
  k_created_at: Date;
  k_expires_at: Date;
  k_integrity_tag: string | null;
}

/** Reads credential state from PostgreSQL on every call (no cache: revocation is immediate). */
@Injectable()
export class GrantStateRepository {
  private readonly store: GrantStore;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly integrity: RowIntegrity,
  ) {
    this.store = new GrantStore(pool);
  }

  /**
   * The credential, its task and its connector, or `undefined` for an unknown `jti`. A task row
   * whose integrity tag does not verify (its user, above all, set by hand: the gateway would
   * call with that user's connected account) stands as if it were gone: the call is refused as
   * one of an ended task. A connector row whose tag does not verify is `null`, as a removed one.
   */
  async load(jti: string): Promise<CredentialState | undefined> {
    const { rows } = await this.pool.query<LoadRow>({ name: 'writ_gateway_load', text: LOAD, values: [jti] });
    const row = rows[0];
    if (!row) return undefined;
    const taskVerifies = row.k_id !== null && this.taskVerifies(row);
    if (row.k_id !== null && !taskVerifies) {
      row.task_status = null;
      row.task_expired = true;
      row.user_issuer = null;
      row.user_subject = null;
      row.task_expires_at_ms = null;
    }
    // A connector whose catalogue (or kind, base URL, credential type) was changed outside Writ
    // stands as if it were gone: the call is refused as one of a removed connector.
    const connectorVerifies =
      row.c_id !== null &&
      this.integrity.verifyConnectorRow({
        id: row.c_id,
        kind: row.c_kind ?? '',
        base_url: row.base_url,
        operations_text: row.operations_text,
        credential_type: row.credential_type,
        integrity_tag: row.c_integrity_tag,
      });
    return {
      jti: row.jti,
      taskId: row.task_id,
      budgetEntries: row.budget_entries,
      declaredBudgets: taskVerifies && Array.isArray(row.k_allowed) ? budgetRules(row.k_allowed as DeclaredEntry[]) : [],
      declaredActions: taskVerifies && row.c_id !== null && Array.isArray(row.k_allowed) ? declaredActions(row.k_allowed as DeclaredEntry[], row.c_id) : [],
      revoked: row.revoked,
      expired: row.expired,
      uses: row.uses,
      maxUses: row.max_uses,
      taskStatus: row.task_status,
      taskExpired: row.task_expired ?? true,
      taskUser: row.user_subject && row.user_issuer ? { issuer: row.user_issuer, subject: row.user_subject } : null,
      connector:
        row.c_id !== null && connectorVerifies
          ? {
              id: row.c_id,
              kind: row.c_kind ?? 'http',
              baseUrl: row.base_url,
              operationsText: row.operations_text,
              credentialType: row.credential_type,
              credentialSealed: row.credential_sealed,
              credentialFingerprint: row.credential_fingerprint,
              version: row.c_version ?? '0',
            }
          : null,
      expiresAtMs: row.expires_at_ms,
      taskExpiresAtMs: row.task_expires_at_ms,
    };
  }

  /** Whether the task row of a credential is one Writ wrote (reported when not). */
  private taskVerifies(row: LoadRow): boolean {
    const task: Omit<TaskIntegrityRow, 'integrity_tag'> = {
      id: row.k_id!,
      agent_id: row.k_agent_id,
      orchestrator_id: row.k_orchestrator_id,
      purpose: row.k_purpose,
      allowed: row.k_allowed,
      on_behalf_of: row.k_on_behalf_of,
      user_issuer: row.user_issuer,
      user_subject: row.user_subject,
      metadata: row.k_metadata,
      task_token_jti: row.k_task_token_jti,
      created_at: row.k_created_at,
      expires_at: row.k_expires_at,
    };
    return this.integrity.verifyTask(taskIntegrityFieldsOf(task), row.k_integrity_tag);
  }

  /**
   * Re-checks credentials without a budget (inside the audit transaction), each against the
   * connector version its call was checked with, all in one statement (a batch's re-checks).
   */
  readonly recheckAt = async (client: PoolClient, checks: RecheckParams[]): Promise<SpendVerdict[]> => {
    const { rows } = await client.query<RecheckRow>({
      name: 'writ_gateway_recheck',
      text: RECHECK,
      values: [checks.map((check) => check.jti), checks.map((check) => check.connectorVersion)],
    });
    return verdictsOf(rows, checks);
  };

  /**
   * {@link recheckAt} as one statement with its values as literals, which the audit batch sends
   * in the message that locks the chain head (`BatchableWork.inline`): one round trip less.
   */
  readonly recheckInline = {
    sql: (checks: RecheckParams[], literal: (value: string) => string): string | undefined => {
      if (checks.some((check) => check.connectorVersion !== null && !/^[0-9]{1,18}$/.test(check.connectorVersion))) return undefined;
      const jtis = checks.map((check) => literal(check.jti)).join(', ');
      const versions = checks.map((check) => check.connectorVersion ?? 'NULL').join(', ');
      return RECHECK.replace('$1::text[]', `ARRAY[${jtis}]::text[]`).replace('$2::bigint[]', `ARRAY[${versions}]::bigint[]`);
    },
    parse: (rows: Array<Record<string, unknown>>, checks: RecheckParams[]): SpendVerdict[] =>
      verdictsOf(
        rows.map((row) => ({ n: Number(row.n), current: row.current === true })),
        checks,
      ),
    expect: {
      statements: [RECHECK_ALL_LIVE],
      sql: (checks: RecheckParams[]): string => executeStatement(RECHECK_ALL_LIVE, [...checkLiterals(checks), String(checks.length)]),
      expected: (): SpendVerdict => 'live',
    },
  };

  /**
   * Spends one use of each use-limited credential of a batch's calls (inside the audit
   * transaction), in the order of the calls, all in one statement; see {@link SPEND_BATCH}.
   */
  readonly spendAt = async (client: PoolClient, checks: SpendParams[]): Promise<SpendResult[]> => {
    const { rows } = await client.query<SpendRow>({
      name: 'writ_gateway_spend_batch',
      text: SPEND_BATCH,
      values: [checks.map((check) => check.jti), checks.map((check) => check.connectorVersion), checks.map(signedMaxOf)],
    });
    return spendResultsOf(rows, checks);
  };

  /** {@link spendAt} as an `EXECUTE` with its values as literals, sent in the message that locks the chain head. */
  readonly spendInline = {
    statements: [SPEND_BATCH_STATEMENT],
    sql: (checks: SpendParams[]): string => executeStatement(SPEND_BATCH_STATEMENT, spendLiterals(checks)),
    parse: (rows: Array<Record<string, unknown>>, checks: SpendParams[]): SpendResult[] => spendResultsOf(rows as unknown as SpendRow[], checks),
    expect: {
      statements: [SPEND_AS_EXPECTED],
      sql: (checks: SpendParams[]): string | undefined =>
        checks.some((check) => check.expectedUses === undefined)
          ? undefined
          : executeStatement(SPEND_AS_EXPECTED, [...spendLiterals(checks), sqlArrayLiteral(checks.map((check) => check.expectedUses!)), String(checks.length)]),
      expected: (check: SpendParams): SpendResult => ({ verdict: 'live', uses: check.expectedUses!, maxUses: check.maxUses ?? null }),
    },
  };

  /**
   * Reserves one call on the task budgets the credential is charged to (inside the audit
   * transaction), all or nothing, each bounded by its `declared` limit (the verified task's).
   */
  reserve(client: PoolClient, taskId: string, entries: number[], values: Record<string, unknown>, declared: readonly BudgetRule[]): Promise<ReserveOutcome> {
    return this.store.reserveBudget(client, taskId, entries, values, declared);
  }

  /** Gives a reservation back (inside the transaction that audits why). */
  release(client: PoolClient, reservation: BudgetReservation): Promise<void> {
    return this.store.releaseBudget(client, reservation);
  }
}
