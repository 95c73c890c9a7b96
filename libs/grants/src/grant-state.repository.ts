import { Inject, Injectable } from '@nestjs/common';
import type { Pool, PoolClient } from 'pg';
import { PG_POOL } from '@writ/database';
import { BudgetReservation, GrantStore, ReserveOutcome } from './grant-store';

/** What the gateway needs about a credential, its task and its connector, read in one query. */
export interface CredentialState {
  jti: string;
  taskId: string | null;
  /** Indexes of the task's limited `allowed` entries this credential's calls are charged to; null: none. */
  budgetEntries: number[] | null;
  revoked: boolean;
  expired: boolean;
  uses: number;
  maxUses: number | null;
  taskStatus: string | null;
  taskExpired: boolean;
  /** The verified user the task acts for, or null. */
  taskUser: { issuer: string; subject: string } | null;
  connector: {
    id: string;
    /** `http`, or `mcp` for a Streamable HTTP MCP server (operations are tools). */
    kind: 'http' | 'mcp';
    baseUrl: string;
    operationsText: string;
    credentialType: string | null;
    credentialSealed: Buffer | null;
    credentialFingerprint: string | null;
  } | null;
}

const LOAD = `
  SELECT t.jti, t.task_id, t.budget_entries, t.revoked_at IS NOT NULL AS revoked,
         t.expires_at <= now() AS expired, t.uses, t.max_uses,
         k.status AS task_status, k.expires_at <= now() AS task_expired, k.user_issuer, k.user_subject,
         c.id AS c_id, c.kind AS c_kind, c.base_url, c.operations::text AS operations_text,
         c.credential_type, c.credential_sealed, c.credential_fingerprint
    FROM access_tokens t
    LEFT JOIN tasks k ON k.id = t.task_id
    LEFT JOIN connectors c ON c.id = t.connector_id
   WHERE t.jti = $1 AND t.kind = 'connector'`;

// Spends one use only while the credential and its task are still good: a revocation that
// committed before this statement makes it match nothing, on every instance.
const SPEND = `
  UPDATE access_tokens t SET uses = t.uses + 1
    FROM tasks k
   WHERE t.jti = $1 AND k.id = t.task_id
     AND t.revoked_at IS NULL AND t.expires_at > now()
     AND (t.max_uses IS NULL OR t.uses < t.max_uses)
     AND k.status = 'active' AND k.expires_at > now()
  RETURNING t.uses, t.max_uses`;

// Credentials without a use budget are only re-checked, not written (a row updated on every
// read would become a hot spot for nothing), all those of one audit batch in one statement.
// It runs under the audit chain-head lock, so its plan must not depend on statistics: each
// `jti` is looked up by primary key (the fenced LATERAL), its task by primary key (the
// correlated subquery). Written as a plain join, PostgreSQL planned it from `tasks` through
// every credential of every active task while `access_tokens` had no statistics yet
// (6-15 ms with 10 000 credentials, held under the lock: docs/performance.md).
const RECHECK = `
  SELECT t.jti
    FROM unnest($1::text[]) AS q(jti)
   CROSS JOIN LATERAL (
         SELECT t.jti, t.task_id FROM access_tokens t
          WHERE t.jti = q.jti AND t.revoked_at IS NULL AND t.expires_at > now()
         OFFSET 0) t
   WHERE (SELECT k.status = 'active' AND k.expires_at > now() FROM tasks k WHERE k.id = t.task_id)`;

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
}

/** Reads credential state from PostgreSQL on every call (no cache: revocation is immediate). */
@Injectable()
export class GrantStateRepository {
  private readonly store: GrantStore;

  constructor(@Inject(PG_POOL) private readonly pool: Pool) {
    this.store = new GrantStore(pool);
  }

  /** The credential, its task and its connector, or `undefined` for an unknown `jti`. */
  async load(jti: string): Promise<CredentialState | undefined> {
    const { rows } = await this.pool.query<LoadRow>({ name: 'writ_gateway_load', text: LOAD, values: [jti] });
    const row = rows[0];
    if (!row) return undefined;
    return {
      jti: row.jti,
      taskId: row.task_id,
      budgetEntries: row.budget_entries,
      revoked: row.revoked,
      expired: row.expired,
      uses: row.uses,
      maxUses: row.max_uses,
      taskStatus: row.task_status,
      taskExpired: row.task_expired ?? true,
      taskUser: row.user_subject && row.user_issuer ? { issuer: row.user_issuer, subject: row.user_subject } : null,
      connector: row.c_id
        ? {
            id: row.c_id,
            kind: row.c_kind ?? 'http',
            baseUrl: row.base_url,
            operationsText: row.operations_text,
            credentialType: row.credential_type,
            credentialSealed: row.credential_sealed,
            credentialFingerprint: row.credential_fingerprint,
          }
        : null,
    };
  }

  /** Spends one use of a budgeted credential atomically (`spendUse`) (inside the audit transaction); `undefined` when none is left. */
  async spend(client: PoolClient, jti: string): Promise<{ uses: number; maxUses: number | null } | undefined> {
    const { rows } = await client.query<{ uses: number; max_uses: number | null }>({ name: 'writ_gateway_spend', text: SPEND, values: [jti] });
    return rows[0] ? { uses: rows[0].uses, maxUses: rows[0].max_uses } : undefined;
  }

  /** Re-checks credentials without a budget (inside the audit transaction): is each still live? */
  readonly recheck = async (client: PoolClient, jtis: string[]): Promise<boolean[]> => {
    const { rows } = await client.query<{ jti: string }>({ name: 'writ_gateway_recheck', text: RECHECK, values: [jtis] });
    const live = new Set(rows.map((row) => row.jti));
    return jtis.map((jti) => live.has(jti));
  };

  /** Reserves one call on the task budgets the credential is charged to (inside the audit transaction), all or nothing. */
  reserve(client: PoolClient, taskId: string, entries: number[], values: Record<string, unknown>): Promise<ReserveOutcome> {
    return this.store.reserveBudget(client, taskId, entries, values);
  }

  /** Gives a reservation back (inside the transaction that audits why). */
  release(client: PoolClient, reservation: BudgetReservation): Promise<void> {
    return this.store.releaseBudget(client, reservation);
  }
}
