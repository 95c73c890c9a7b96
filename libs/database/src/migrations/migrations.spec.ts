import type { MigrationInterface, QueryRunner } from 'typeorm';
import { MIGRATIONS } from './index';
import { HOT_TABLES } from './online-index';

/**
 * Migrations run at start while the previous release's instances keep serving (a rolling
 * upgrade): on the tables that take writes all the time (`HOT_TABLES`), a statement that holds a
 * write-blocking lock for as long as the table is read or rewritten is an outage. This spec
 * records the SQL each migration's `up` sends (no database) and refuses those statements; see
 * docs/migrations.md for what to write instead. Migrations before {@link CHECKED_FROM} were
 * released before this check and are described in docs/operations.md (What a migration locks).
 */

/** The first migration this check holds to it; the ones before were released already. */
const CHECKED_FROM = 1764580000000;

/**
 * Reviewed exceptions: migration name → why its flagged statement is safe. Each needs a reason a
 * reviewer agreed with (a table known to be small at that release, say).
 */
const REVIEWED: Record<string, string> = {};

/** Functions a column default may call without rewriting the table (evaluated once, at the ALTER). */
const STABLE_DEFAULTS = /^(now|current_timestamp|current_date|transaction_timestamp|statement_timestamp|current_user|session_user)$/i;

/**
 * What is wrong with one statement on a hot table, if anything. `created`: tables created by the
 * same migration (empty, and seen by no one before it commits), which are not hot yet.
 */
function lockHazards(statement: string, created: ReadonlySet<string> = new Set()): string[] {
  const sql = statement.replace(/\s+/g, ' ').trim();
  const hot = `(?:${HOT_TABLES.filter((table) => !created.has(table)).join('|')})`;
  const hazards: string[] = [];
  const on = (pattern: string) => new RegExp(pattern, 'i').test(sql);
  if (on(`^CREATE (UNIQUE )?INDEX (?!CONCURRENTLY)(IF NOT EXISTS )?\\w+ ON (ONLY )?(public\\.)?${hot}\\b`)) {
    hazards.push('CREATE INDEX without CONCURRENTLY (SHARE lock: every write waits for the whole build)');
  }
  if (on(`^DROP INDEX (?!CONCURRENTLY)(IF EXISTS )?(public\\.)?${hot}_`)) {
    hazards.push('DROP INDEX without CONCURRENTLY (ACCESS EXCLUSIVE lock on its table)');
  }
  if (on(`^REINDEX (?!.*CONCURRENTLY)`) || on(`^(CLUSTER|VACUUM FULL|LOCK TABLE)\\b.*\\b${hot}\\b`)) {
    hazards.push('REINDEX, CLUSTER, VACUUM FULL or LOCK TABLE (writes wait for it)');
  }
  if (on(`^(UPDATE|DELETE FROM) (ONLY )?(public\\.)?${hot}\\b`)) {
    hazards.push('UPDATE or DELETE of a hot table in a migration (row locks on all of it, in one transaction): backfill in batches outside the migration');
  }
  const alter = new RegExp(`^ALTER TABLE (IF EXISTS )?(ONLY )?(public\\.)?${hot}\\b(.*)$`, 'i').exec(sql);
  if (alter) {
    const actions = alter[4];
    if (/\bSET NOT NULL\b/i.test(actions))
      hazards.push('SET NOT NULL (scans the table under ACCESS EXCLUSIVE): add a CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL');
    if (/\bADD (CONSTRAINT \w+ )?(CHECK|FOREIGN KEY|UNIQUE|PRIMARY KEY|EXCLUDE)\b/i.test(actions) && !/\bNOT VALID\b/i.test(actions)) {
      hazards.push(
        'ADD CONSTRAINT without NOT VALID (scans the table under its lock), or a UNIQUE/PRIMARY KEY built in place: build the index concurrently first',
      );
    }
    if (/\b(ALTER COLUMN \w+ )?(SET DATA )?TYPE\b/i.test(actions) && /\bALTER COLUMN\b/i.test(actions))
      hazards.push('ALTER COLUMN TYPE (rewrites the table under ACCESS EXCLUSIVE)');
    if (/\bADD COLUMN\b.*\b(SERIAL|BIGSERIAL|SMALLSERIAL|GENERATED ALWAYS AS \(.*\) STORED|PRIMARY KEY|UNIQUE)\b/i.test(actions)) {
      hazards.push('ADD COLUMN that rewrites the table or builds an index in place');
    }
    for (const match of actions.matchAll(/\bDEFAULT ([a-z_][\w.]*)\s*\(/gi)) {
      if (!STABLE_DEFAULTS.test(match[1])) hazards.push(`ADD COLUMN with a volatile DEFAULT ${match[1]}() (rewrites the table under ACCESS EXCLUSIVE)`);
    }
  }
  return hazards;
}

/**
 * The SQL `migration.up` sends, run against a recorder standing for a database where none of its
 * objects exist yet, outside a transaction (whether it must be is the last test's business).
 */
async function statementsOf(migration: MigrationInterface): Promise<string[]> {
  const sent: string[] = [];
  const runner = {
    isTransactionActive: false,
    query: (sql: string): Promise<unknown> => {
      sent.push(sql);
      return Promise.resolve(/^\s*SHOW lock_timeout/i.test(sql) ? [{ lock_timeout: '1s' }] : []);
    },
  } as unknown as QueryRunner;
  await migration.up(runner);
  return sent;
}

const timestampOf = (migration: MigrationInterface): number => Number(/(\d{13})$/.exec(migration.name ?? migration.constructor.name)![1]);

describe('migrations: no write-blocking lock on a hot table', () => {
  const checked = MIGRATIONS.map((Migration): MigrationInterface => new Migration()).filter((migration) => timestampOf(migration) >= CHECKED_FROM);

  it('checks the migrations from the first one held to it', () => {
    expect(checked.map((migration) => migration.name)).toContain('ListOrderIndexes1764620000000');
  });

  it.each(checked.map((migration) => [migration.name!, migration] as const))('%s', async (name, migration) => {
    const statements = await statementsOf(migration);
    const created = new Set(statements.flatMap((sql) => /^\s*CREATE TABLE (?:IF NOT EXISTS )?(?:public\.)?(\w+)/i.exec(sql)?.[1] ?? []));
    const hazards = statements.flatMap((sql) => lockHazards(sql, created).map((hazard) => `${hazard}: ${sql.replace(/\s+/g, ' ').trim()}`));
    expect(REVIEWED[name] ? [] : hazards).toEqual([]);
  });

  it('alters at most one existing table per transaction (each ACCESS EXCLUSIVE lock is held to the commit, while the next waits)', async () => {
    for (const migration of checked.filter((m) => m.transaction !== false)) {
      const statements = await statementsOf(migration);
      const created = new Set(statements.flatMap((sql) => /^\s*CREATE TABLE (?:IF NOT EXISTS )?(?:public\.)?(\w+)/i.exec(sql)?.[1] ?? []));
      const altered = new Set(
        statements.flatMap((sql) => /^\s*ALTER TABLE (?:IF EXISTS )?(?:ONLY )?(?:public\.)?(\w+)/i.exec(sql)?.[1] ?? []).filter((table) => !created.has(table)),
      );
      expect([migration.name, altered.size <= 1 || REVIEWED[migration.name!] !== undefined]).toEqual([migration.name, true]);
    }
  });

  it('runs a migration that builds or drops an index concurrently outside a transaction (transaction = false)', async () => {
    for (const migration of checked) {
      if ((await statementsOf(migration)).some((sql) => /CONCURRENTLY/i.test(sql)))
        expect([migration.name, migration.transaction]).toEqual([migration.name, false]);
    }
  });
});

describe('lockHazards: what it refuses on a hot table, and what it lets through', () => {
  it.each([
    'CREATE INDEX tasks_x ON tasks (agent_id)',
    'create unique index if not exists approvals_x on public.approvals (task_id)',
    'DROP INDEX tasks_agent',
    'DROP INDEX IF EXISTS approvals_pending',
    'ALTER TABLE tasks ALTER COLUMN purpose SET NOT NULL',
    'ALTER TABLE tasks ADD CONSTRAINT tasks_x CHECK (refusals >= 0)',
    'ALTER TABLE approvals ADD CONSTRAINT approvals_task_fk FOREIGN KEY (task_id) REFERENCES tasks (id)',
    'ALTER TABLE tasks ALTER COLUMN refusals TYPE bigint',
    'ALTER TABLE tasks ADD COLUMN token uuid NOT NULL DEFAULT gen_random_uuid()',
    'ALTER TABLE audit_events ADD COLUMN n bigserial',
    'UPDATE tasks SET grants_issued = 0',
    'REINDEX TABLE tasks',
    'LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE',
  ])('refuses %s', (sql) => {
    expect(lockHazards(sql)).not.toEqual([]);
  });

  it.each([
    'CREATE INDEX CONCURRENTLY tasks_x ON tasks (agent_id)',
    'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS tasks_idempotency ON tasks (orchestrator_id, idempotency_key)',
    'DROP INDEX CONCURRENTLY IF EXISTS tasks_agent',
    'ALTER TABLE tasks ADD COLUMN IF NOT EXISTS idempotency_key text',
    'ALTER TABLE tasks ADD COLUMN ended_by text NOT NULL DEFAULT now()',
    'ALTER TABLE tasks ADD COLUMN grants integer NOT NULL DEFAULT 0',
    'ALTER TABLE tasks ADD CONSTRAINT tasks_x CHECK (refusals >= 0) NOT VALID',
    'ALTER TABLE tasks VALIDATE CONSTRAINT tasks_x',
    'CREATE INDEX connectors_x ON connectors (kind)',
    'UPDATE signing_keys SET status = status',
  ])('lets through %s', (sql) => {
    expect(lockHazards(sql)).toEqual([]);
  });

  it('lets through an index on a hot table created by the same migration (empty, seen by no one yet)', () => {
    expect(lockHazards('CREATE INDEX admin_idempotency_keys_expiry ON admin_idempotency_keys (expires_at)', new Set(['admin_idempotency_keys']))).toEqual([]);
  });
});
