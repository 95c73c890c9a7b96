import type { Pool, PoolClient } from 'pg';
import type { TaskStatus } from '@writ/database';
import { type BudgetRule, limitRuleName } from './task-limits';
import { type RowIntegrity, TASK_INTEGRITY_COLUMNS, taskIntegrityFieldsOf, type TaskIntegrityRow } from './row-integrity';

/**
 * Reason code of a refused exchange whose refusal was recorded with its policy decision (and
 * counted) in its own transaction: the token endpoint does not audit it a second time.
 */
export const POLICY_DENIED = 'policy_denied';

/** A task's refusal counters right after a refusal was counted (the row stays locked until commit). */
export interface RefusalCount {
  status: TaskStatus;
  expiresAt: Date;
  /** Refusals including this one. */
  refusals: number;
  /** Out-of-purpose requests including this one. */
  outOfPurposeRequests: number;
}

/** A task as its orchestrator declared it, ready to be recorded. */
export interface DeclaredTask {
  id: string;
  agentId: string;
  orchestratorId: string;
  purpose: string;
  /** The validated `allowed` entries (with their `limits`). */
  allowed: unknown[];
  onBehalfOf: string | null;
  metadata: Record<string, unknown>;
  taskTokenJti: string;
  /** Seconds since the epoch, as in the task token's `iat`. */
  createdAtSeconds: number;
  expiresAt: Date;
  budgets: BudgetRule[];
  /** The verified user the task acts for (issuer and `sub` of a trusted identity provider), set once with the task. */
  user?: { issuer: string; subject: string };
  /** The request's `Idempotency-Key` and the digest of its body: declared once per orchestrator and key. */
  idempotency?: { key: string; digest: string };
}

/**
 * What a task's declaration was allowed on, as it stands in the declaring transaction (each row
 * share-locked until commit): the orchestrator, its Tasks API token and the agent.
 */
export interface DeclarerStanding {
  /** The orchestrator's status; `null` when it is gone. */
  orchestratorStatus: 'active' | 'suspended' | null;
  /** Its `allowed_agents` (empty when it is gone). */
  allowedAgents: string[];
  /** The Tasks API token the request was authenticated with: usable, revoked, past its expiry, or not found. */
  token: 'live' | 'revoked' | 'expired' | 'unknown';
  /** The agent's status; `null` when it is gone. */
  agentStatus: 'active' | 'suspended' | null;
}

/** The status and reason a task ended past its deadline gets, whatever end was asked for (as the expiry sweep writes them). */
export const DEADLINE_PASSED = { status: 'expired', reason: 'deadline passed' } as const;

/** What ending a task changed. */
export interface EndedTaskRow {
  agentId: string;
  /** The status the task ended with: the one asked for, or `expired` when its deadline had passed. */
  status: Exclude<TaskStatus, 'active'>;
  /** Its `status_reason`: the one given, or {@link DEADLINE_PASSED}'s. */
  reason: string;
  /** Every credential of the task revoked by this end. */
  jtis: string[];
}

/** One reserved budget rule of a forwarded call. */
export interface ReservedRule {
  entry: number;
  rule: string;
  amount: number;
  remaining: number;
}

/** A reservation held for one call: what to give back if the call never left. */
export interface BudgetReservation {
  taskId: string;
  rules: ReservedRule[];
}

/** The outcome of a reservation: held, or refused naming the rule (`limit:calls`, `limit:sum:<name>`). */
export type ReserveOutcome = { ok: true; reservation: BudgetReservation } | { ok: false; rule: string; entry: number | null; description: string };

/** A declared limit and what is left of it. */
export interface BudgetLeft {
  limit: number;
  used: number;
  remaining: number;
}

/** The budgets of one limited `allowed` entry, as the policy and the Tasks API show them. */
export interface EntryBudget {
  entry: number;
  calls?: BudgetLeft;
  sum?: Record<string, BudgetLeft>;
}

interface BudgetRow {
  entry: number;
  rule: string;
  used: string;
  maximum: string;
  /** `maximum - used`, at least 0, subtracted in SQL: exact decimals (0.3 - 0.1 is 0.2, not 0.19999999999999998). */
  remaining: string;
}

/**
 * A budget row (`b`) as text, its maximum bounded by the declared limit joined as `d` (see
 * {@link DECLARED_JOIN}), the subtraction done exactly in `numeric`.
 */
const BOUNDED_BUDGET_COLUMNS = `b.entry, b.rule, GREATEST(b.used, 0)::text AS used, LEAST(b.maximum, d.maximum)::text AS maximum,
  GREATEST(LEAST(b.maximum, d.maximum) - GREATEST(b.used, 0), 0)::text AS remaining`;

/** The declared limits (`$2`-`$4`: entry, rule, maximum) joined to the budget rows `b`; none given: the rows' own maxima. */
const DECLARED_JOIN = `LEFT JOIN unnest($2::smallint[], $3::text[], $4::numeric[]) AS d(entry, rule, maximum) ON d.entry = b.entry AND d.rule = b.rule`;

/**
 * The standing of a task's declarer ({@link DeclarerStanding}), read under share locks taken in
 * this order: the orchestrator, its Tasks API token, the agent (each CTE is scanned when its
 * first column is read). An admin suspension, narrowing or deletion of the orchestrator, a
 * revocation of the token, a suspension or deletion of the agent: each updates or deletes one
 * of these rows, so it either waits for the declaring transaction to commit (and then covers the
 * new task as it covers every task that exists at its commit) or committed first, and then this
 * statement, re-reading the locked rows, sees it.
 */
const DECLARER_STANDING = `
  WITH o AS MATERIALIZED (SELECT status, jwks, allowed_agents, integrity_tag FROM orchestrators WHERE id = $1 FOR SHARE),
       t AS MATERIALIZED (SELECT revoked_at, expires_at FROM access_tokens WHERE jti = $2 AND kind = 'tasks' AND client_id = $1 FOR SHARE),
       a AS MATERIALIZED (SELECT status, jwks, integrity_tag FROM agents WHERE id = $3 FOR SHARE)
  SELECT (SELECT status FROM o) AS orchestrator_status,
         (SELECT jwks FROM o) AS orchestrator_jwks,
         (SELECT allowed_agents FROM o) AS allowed_agents,
         (SELECT integrity_tag FROM o) AS orchestrator_tag,
         (SELECT CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN expires_at <= now() THEN 'expired' ELSE 'live' END FROM t) AS token,
         (SELECT status FROM a) AS agent_status,
         (SELECT jwks FROM a) AS agent_jwks,
         (SELECT integrity_tag FROM a) AS agent_tag`;

const REVOKE_TASK_TOKENS = `UPDATE access_tokens SET revoked_at = now(), revoked_reason = $2
                             WHERE task_id = $1 AND revoked_at IS NULL RETURNING jti`;

/**
 * One statement, all or nothing: locks every budget row of the charged entries (in key order,
 * so concurrent reservations queue instead of deadlocking), computes each rule's amount (1 for
 * `calls`, the request's value of the named constraint for `sum:<name>`), and adds them only
 * if every rule stays within its maximum. Under READ COMMITTED the locked rows are the latest
 * committed versions, so the check holds against every other instance.
 *
 * The budget rows are not tagged; the limits the task declared (`$4`-`$6`: entry, rule and
 * maximum of each, read from the verified task row) are. Each row's maximum is bounded by its
 * declared limit, and every declared rule of the charged entries must have its row: a
 * `maximum` raised by hand, or a `calls` row deleted, buys nothing; nor does a `used` below zero
 * (its CHECK dropped by hand), which counts as zero.
 */
const RESERVE = `
  WITH declared AS (SELECT * FROM unnest($4::smallint[], $5::text[], $6::numeric[]) AS d(entry, rule, maximum)),
  locked AS (
    SELECT b.entry, b.rule, GREATEST(b.used, 0) AS used, LEAST(b.maximum, d.maximum) AS maximum, d.rule IS NOT NULL AS declared,
           CASE WHEN b.rule = 'calls' THEN 1::numeric
                WHEN jsonb_typeof($3::jsonb -> substr(b.rule, 5)) = 'number' THEN ($3::jsonb ->> substr(b.rule, 5))::numeric
           END AS amount
      FROM task_budgets b LEFT JOIN declared d ON d.entry = b.entry AND d.rule = b.rule
     WHERE b.task_id = $1 AND b.entry = ANY($2::smallint[])
     ORDER BY b.entry, b.rule FOR UPDATE OF b),
  verdict AS (
    SELECT count(*) > 0 AND count(*) FILTER (WHERE declared) = (SELECT count(*) FROM declared)
           AND bool_and(amount IS NOT NULL AND amount >= 0 AND used + amount <= maximum) AS ok FROM locked)
  UPDATE task_budgets b SET used = l.used + l.amount
    FROM locked l, verdict v
   WHERE v.ok AND b.task_id = $1 AND b.entry = l.entry AND b.rule = l.rule
  RETURNING b.entry, b.rule, l.amount::text AS amount, GREATEST(l.maximum - b.used, 0)::text AS remaining`;

/** The `$4`-`$6` (entry, rule, maximum) arrays of declared budget rules. */
function declaredArrays(declared: readonly BudgetRule[]): [number[], string[], string[]] {
  return [declared.map((rule) => rule.entry), declared.map((rule) => rule.rule), declared.map((rule) => String(rule.maximum))];
}

const RELEASE = `
  UPDATE task_budgets b SET used = GREATEST(b.used - r.amount, 0)
    FROM unnest($2::smallint[], $3::text[], $4::numeric[]) AS r(entry, rule, amount)
   WHERE b.task_id = $1 AND b.entry = r.entry AND b.rule = r.rule`;

/**
 * Task and credential state on the grant path: refusal counters, task ends, budgets. Writes
 * take the caller's transaction (the one that commits their audit events) and are each one
 * atomic statement or run under the row locks they take, so they hold across instances.
 */
export class GrantStore {
  /** `integrity` tags the tasks {@link declareTask} writes and verifies the rows {@link declarerStanding} reads (both refuse to run without it). */
  constructor(
    private readonly pool: Pool,
    private readonly integrity?: RowIntegrity,
  ) {}

  private requireIntegrity(): RowIntegrity {
    if (!this.integrity) throw new Error('GrantStore: no RowIntegrity (the master key) to tag or verify rows with');
    return this.integrity;
  }

  /**
   * Counts a refused exchange (and, when out of purpose, an out-of-purpose request) and returns
   * the counters as they are now. The increment locks the task row until the transaction ends:
   * concurrent refusals of one task are counted one after another, each seeing the others.
   */
  async recordRefusal(tx: PoolClient, taskId: string, outOfPurpose: boolean): Promise<RefusalCount | undefined> {
    const { rows } = await tx.query<{ status: TaskStatus; expires_at: Date; refusals: number; out_of_purpose_requests: number }>(
      `UPDATE tasks SET refusals = refusals + 1, out_of_purpose_requests = out_of_purpose_requests + $2
        WHERE id = $1 RETURNING status, expires_at, refusals, out_of_purpose_requests`,
      [taskId, outOfPurpose ? 1 : 0],
    );
    const row = rows[0];
    return row ? { status: row.status, expiresAt: row.expires_at, refusals: row.refusals, outOfPurposeRequests: row.out_of_purpose_requests } : undefined;
  }

  /**
   * Moves an active task to a final status and revokes every credential issued for it, in the
   * caller's transaction. `undefined` when the task was not active (nothing changed). An
   * issuance in flight holds the task row share-locked: this waits for it, and the revocation
   * that follows sees its credential. A task whose deadline has passed (`expires_at <= now()`,
   * the database clock, in the same statement that ends it) ended then, whatever end is asked
   * for now: it becomes `expired`, as the expiry sweep would have made it, never `completed`
   * after the fact (the sweep runs every few seconds; the deadline is the end).
   */
  async endTask(tx: PoolClient, taskId: string, status: Exclude<TaskStatus, 'active'>, reason: string): Promise<EndedTaskRow | undefined> {
    const ended = await tx.query<{ agent_id: string; status: Exclude<TaskStatus, 'active'>; status_reason: string }>(
      `UPDATE tasks SET status = CASE WHEN expires_at <= now() THEN '${DEADLINE_PASSED.status}' ELSE $2 END,
                        status_reason = CASE WHEN expires_at <= now() THEN '${DEADLINE_PASSED.reason}' ELSE $3 END,
                        ended_at = now()
        WHERE id = $1 AND status = 'active' RETURNING agent_id, status, status_reason`,
      [taskId, status, reason],
    );
    if (ended.rowCount === 0) return undefined;
    const row = ended.rows[0];
    const revoked = await tx.query<{ jti: string }>(REVOKE_TASK_TOKENS, [taskId, `task ${row.status}`]);
    return { agentId: row.agent_id, status: row.status, reason: row.status_reason, jtis: revoked.rows.map((r) => r.jti) };
  }

  /**
   * Locks and reads, in the caller's transaction, what the declaration of a task by
   * `orchestratorId` (authenticated with the Tasks API token `tokenJti`) for `agentId` was
   * allowed on, so that the caller checks it again right before {@link declareTask}: the check
   * and the insert then commit together, and no concurrent change slips between them.
   */
  async declarerStanding(tx: PoolClient, orchestratorId: string, tokenJti: string, agentId: string): Promise<DeclarerStanding> {
    const integrity = this.requireIntegrity();
    const { rows } = await tx.query<{
      orchestrator_status: DeclarerStanding['orchestratorStatus'];
      orchestrator_jwks: unknown;
      allowed_agents: string[] | null;
      orchestrator_tag: string | null;
      token: Exclude<DeclarerStanding['token'], 'unknown'> | null;
      agent_status: DeclarerStanding['agentStatus'];
      agent_jwks: unknown;
      agent_tag: string | null;
    }>(DECLARER_STANDING, [orchestratorId, tokenJti, agentId]);
    const row = rows[0];
    // A registration Writ did not write (its tag does not verify) stands as if it were gone.
    const orchestrator =
      row.orchestrator_status !== null &&
      integrity.verifyClient(
        'orchestrators',
        { id: orchestratorId, status: row.orchestrator_status, jwks: row.orchestrator_jwks, allowedAgents: row.allowed_agents ?? [] },
        row.orchestrator_tag,
      );
    const agent = row.agent_status !== null && integrity.verifyClient('agents', { id: agentId, status: row.agent_status, jwks: row.agent_jwks }, row.agent_tag);
    return {
      orchestratorStatus: orchestrator ? row.orchestrator_status : null,
      allowedAgents: orchestrator ? (row.allowed_agents ?? []) : [],
      token: row.token ?? 'unknown',
      agentStatus: agent ? row.agent_status : null,
    };
  }

  /**
   * Records a declared task, tagged ({@link RowIntegrity}), and its budgets, in the caller's
   * transaction (with its `task.created` event). False (nothing recorded) when the orchestrator
   * already declared a task under the same `Idempotency-Key`: the insert waits for a concurrent
   * one with that key, then finds it.
   */
  async declareTask(tx: PoolClient, task: DeclaredTask): Promise<boolean> {
    const tag = this.requireIntegrity().tagTask({
      id: task.id,
      agentId: task.agentId,
      orchestratorId: task.orchestratorId,
      purpose: task.purpose,
      allowed: task.allowed,
      onBehalfOf: task.onBehalfOf,
      userIssuer: task.user?.issuer ?? null,
      userSubject: task.user?.subject ?? null,
      metadata: task.metadata,
      taskTokenJti: task.taskTokenJti,
      createdAt: new Date(task.createdAtSeconds * 1000),
      expiresAt: task.expiresAt,
    });
    const { rowCount } = await tx.query(
      `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, on_behalf_of, metadata, status, task_token_jti, created_at, expires_at,
                          idempotency_key, request_digest, user_issuer, user_subject, integrity_tag)
       VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, to_timestamp($9), $10, $11, $12, $13, $14, $15)
       ON CONFLICT (orchestrator_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`,
      [
        task.id,
        task.agentId,
        task.orchestratorId,
        task.purpose,
        JSON.stringify(task.allowed),
        task.onBehalfOf,
        JSON.stringify(task.metadata),
        task.taskTokenJti,
        task.createdAtSeconds,
        task.expiresAt,
        task.idempotency?.key ?? null,
        task.idempotency?.digest ?? null,
        task.user?.issuer ?? null,
        task.user?.subject ?? null,
        tag,
      ],
    );
    if (rowCount !== 1) return false;
    await this.declareBudgets(tx, task.id, task.budgets);
    return true;
  }

  /**
   * The task an orchestrator declared under `key`, with what a replay of its declaration needs; its
   * status as the Tasks API shows it (an active task past its deadline is `expired`). A row whose
   * integrity tag does not verify is not answered (its task token would be signed again from it):
   * undefined, as if nothing were declared under the key.
   */
  async taskDeclaredWithKey(
    client: Pool | PoolClient,
    orchestratorId: string,
    key: string,
  ): Promise<{ id: string; agentId: string; digest: string; taskTokenJti: string; createdAtSeconds: number; expiresAt: Date; status: string } | undefined> {
    const integrity = this.requireIntegrity();
    const { rows } = await client.query<TaskIntegrityRow & { request_digest: string; created: string; shown_status: string }>(
      `SELECT ${TASK_INTEGRITY_COLUMNS}, integrity_tag, request_digest, extract(epoch FROM created_at)::bigint::text AS created,
              CASE WHEN status = 'active' AND expires_at <= now() THEN 'expired' ELSE status END AS shown_status
         FROM tasks WHERE orchestrator_id = $1 AND idempotency_key = $2`,
      [orchestratorId, key],
    );
    const row = rows[0];
    if (!row || !integrity.verifyTask(taskIntegrityFieldsOf(row), row.integrity_tag)) return undefined;
    return {
      id: row.id,
      agentId: row.agent_id,
      digest: row.request_digest,
      taskTokenJti: row.task_token_jti,
      createdAtSeconds: Number(row.created),
      expiresAt: row.expires_at,
      status: row.shown_status,
    };
  }

  /**
   * Ends every active task of an agent as `revoked` (the agent is being deleted), in the
   * caller's transaction; returns each one's id, status and reason. A task past its deadline
   * becomes `expired` instead, as in {@link endTask}. Their credentials are revoked with the
   * agent's.
   */
  async revokeTasksOfAgent(tx: PoolClient, agentId: string, reason: string): Promise<Array<Omit<EndedTaskRow, 'jtis'> & { id: string }>> {
    const { rows } = await tx.query<{ id: string; status: 'revoked' | 'expired'; status_reason: string }>(
      `UPDATE tasks SET status = CASE WHEN expires_at <= now() THEN '${DEADLINE_PASSED.status}' ELSE 'revoked' END,
                        status_reason = CASE WHEN expires_at <= now() THEN '${DEADLINE_PASSED.reason}' ELSE $2 END,
                        ended_at = now()
        WHERE agent_id = $1 AND status = 'active' RETURNING id, status, status_reason`,
      [agentId, reason],
    );
    return rows.map((row) => ({ id: row.id, agentId, status: row.status, reason: row.status_reason }));
  }

  /** Revokes one credential (RFC 7009), in the caller's transaction; false when it was already revoked. */
  async revokeCredential(tx: PoolClient, jti: string, reason: string): Promise<boolean> {
    const { rowCount } = await tx.query(`UPDATE access_tokens SET revoked_at = now(), revoked_reason = $2 WHERE jti = $1 AND revoked_at IS NULL`, [
      jti,
      reason,
    ]);
    return rowCount === 1;
  }

  /** Revokes an orchestrator's live Tasks API tokens (suspension or deletion), in the caller's transaction. */
  async revokeTasksTokensOf(tx: PoolClient, orchestratorId: string, reason: string): Promise<string[]> {
    const { rows } = await tx.query<{ jti: string }>(
      `UPDATE access_tokens SET revoked_at = now(), revoked_reason = $2
        WHERE client_id = $1 AND kind = 'tasks' AND revoked_at IS NULL AND expires_at > now() RETURNING jti`,
      [orchestratorId, reason],
    );
    return rows.map((row) => row.jti);
  }

  /** Writes the budget rows of a new task (in its creating transaction). */
  async declareBudgets(tx: PoolClient, taskId: string, rules: BudgetRule[]): Promise<void> {
    if (rules.length === 0) return;
    await tx.query(
      `INSERT INTO task_budgets (task_id, entry, rule, maximum)
       SELECT $1, * FROM unnest($2::smallint[], $3::text[], $4::numeric[])`,
      [taskId, rules.map((rule) => rule.entry), rules.map((rule) => rule.rule), rules.map((rule) => String(rule.maximum))],
    );
  }

  /**
   * Reserves one call on every budget of the charged entries, atomically: `calls` by one, each
   * `sum:<name>` by `values[name]` (the request's value of that constraint). Refused, changing
   * nothing, when any rule would pass its maximum or a summed value is missing or negative.
   */
  async reserveBudget(
    tx: PoolClient,
    taskId: string,
    entries: number[],
    values: Record<string, unknown>,
    declared: readonly BudgetRule[],
  ): Promise<ReserveOutcome> {
    const numeric: Record<string, number> = {};
    for (const [name, value] of Object.entries(values)) if (typeof value === 'number' && Number.isFinite(value)) numeric[name] = value;
    const charged = declared.filter((rule) => entries.includes(rule.entry));
    const { rows } = await tx.query<{ entry: number; rule: string; amount: string; remaining: string }>({
      name: 'writ_reserve_budget',
      text: RESERVE,
      values: [taskId, entries, JSON.stringify(numeric), ...declaredArrays(charged)],
    });
    if (rows.length > 0) {
      return {
        ok: true,
        reservation: {
          taskId,
          rules: rows.map((row) => ({ entry: row.entry, rule: row.rule, amount: Number(row.amount), remaining: Number(row.remaining) })),
        },
      };
    }
    return this.explainRefusal(tx, taskId, entries, numeric, charged);
  }

  /** Gives back a reservation (the call never reached the upstream), in the caller's transaction. */
  async releaseBudget(tx: PoolClient, reservation: BudgetReservation): Promise<void> {
    const { taskId, rules } = reservation;
    if (rules.length === 0) return;
    await tx.query(RELEASE, [taskId, rules.map((rule) => rule.entry), rules.map((rule) => rule.rule), rules.map((rule) => String(rule.amount))]);
  }

  /**
   * What is left of every budget of a task, by entry (empty for a task without limits). With
   * `declared` (the limits of the verified task row), each maximum is bounded by its declared
   * limit, as the gateway's reservation bounds it.
   */
  async budgetsOf(taskId: string, declared: readonly BudgetRule[] = []): Promise<EntryBudget[]> {
    const { rows } = await this.pool.query<BudgetRow>(
      `SELECT ${BOUNDED_BUDGET_COLUMNS} FROM task_budgets b ${DECLARED_JOIN} WHERE b.task_id = $1 ORDER BY b.entry, b.rule`,
      [taskId, ...declaredArrays(declared)],
    );
    const byEntry = new Map<number, EntryBudget>();
    for (const row of rows) {
      const budget = byEntry.get(row.entry) ?? { entry: row.entry };
      const limit = Number(row.maximum);
      const used = Number(row.used);
      const left: BudgetLeft = { limit, used, remaining: Number(row.remaining) };
      if (row.rule === 'calls') budget.calls = left;
      else budget.sum = { ...budget.sum, [row.rule.slice(4)]: left };
      byEntry.set(row.entry, budget);
    }
    return [...byEntry.values()];
  }

  /** Names the rule a refused reservation failed on (read after the atomic decision, for the message only). */
  private async explainRefusal(
    tx: PoolClient,
    taskId: string,
    entries: number[],
    values: Record<string, number>,
    declared: readonly BudgetRule[],
  ): Promise<ReserveOutcome> {
    // Whether each rule is passed is decided in numeric, as the reservation did (0.2 + 0.1 fits 0.3 there, not in doubles).
    const { rows } = await tx.query<BudgetRow & { over: boolean | null }>(
      `SELECT ${BOUNDED_BUDGET_COLUMNS},
              GREATEST(b.used, 0) + CASE WHEN b.rule = 'calls' THEN 1::numeric
                            WHEN jsonb_typeof($5::jsonb -> substr(b.rule, 5)) = 'number' THEN ($5::jsonb ->> substr(b.rule, 5))::numeric END
                > LEAST(b.maximum, d.maximum) AS over
         FROM task_budgets b ${DECLARED_JOIN} WHERE b.task_id = $1 AND b.entry = ANY($6::smallint[]) ORDER BY b.entry, b.rule`,
      [taskId, ...declaredArrays(declared), JSON.stringify(values), entries],
    );
    for (const row of rows) {
      const name = row.rule.startsWith('sum:') ? row.rule.slice(4) : undefined;
      const amount = name === undefined ? 1 : values[name];
      const where = `allowed[${row.entry}].limits.${name === undefined ? 'calls' : `sum.${name}`}`;
      if (amount === undefined)
        return { ok: false, rule: limitRuleName(row.rule), entry: row.entry, description: `the request has no numeric value for ${name}, summed by ${where}` };
      if (amount < 0) return { ok: false, rule: limitRuleName(row.rule), entry: row.entry, description: `a negative ${name} cannot be charged to ${where}` };
      if (row.over === true) {
        return {
          ok: false,
          rule: limitRuleName(row.rule),
          entry: row.entry,
          description: `the task's budget ${where} (${row.maximum}) would be exceeded: ${row.used} used, this call needs ${amount}`,
        };
      }
    }
    const first = rows[0];
    return {
      ok: false,
      rule: first ? limitRuleName(first.rule) : 'limit:calls',
      entry: first?.entry ?? null,
      description: "the task's budget for this credential is spent",
    };
  }
}
