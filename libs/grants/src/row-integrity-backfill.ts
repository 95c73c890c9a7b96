import type { Pool, PoolClient } from 'pg';
import type { AuditEventInput } from '@writ/audit';
import { type AuditedTransaction, watchCheckedOut } from '@writ/database';
import {
  APPROVAL_INTEGRITY_COLUMNS,
  approvalIntegrityFieldsOf,
  type ApprovalIntegrityRow,
  CONNECTOR_INTEGRITY_COLUMNS,
  connectorIntegrityFieldsOf,
  type ConnectorIntegrityRow,
  IDENTITY_PROVIDER_INTEGRITY_COLUMNS,
  identityProviderIntegrityFieldsOf,
  type IdentityProviderIntegrityRow,
  POLICY_INTEGRITY_COLUMNS,
  policyIntegrityFieldsOf,
  type PolicyIntegrityRow,
  type RowIntegrity,
  TASK_INTEGRITY_COLUMNS,
  type TaggedTable,
  taskIntegrityFieldsOf,
  type TaskIntegrityRow,
} from './row-integrity';

/** Key of the session advisory lock under which one instance at a time tags rows (the upgrade's backfill, the re-tag after a rotation). */
const ROW_TAG_LOCK = 7_311_047;

/** Rows tagged per statement. */
const BATCH = 500;

/** Rows tagged (or re-tagged) per table. */
export type RowTagCounts = Record<TaggedTable, number>;

interface ClientTagRow {
  id: string;
  status: string;
  jwks: unknown;
  allowed_agents?: string[];
  integrity_tag: string | null;
}

interface AdminTokenTagRow {
  id: string;
  role: string;
  token_hash: string;
  expires_at: Date | null;
  integrity_tag: string | null;
}

function adminTokenFields(row: AdminTokenTagRow) {
  return { id: row.id, role: row.role, tokenHash: row.token_hash, expiresAt: row.expires_at };
}

function clientFields(row: ClientTagRow) {
  return { id: row.id, status: row.status, jwks: row.jwks, allowedAgents: row.allowed_agents ?? [] };
}

/** The primary key of the tagged tables whose key is not `id`. */
const ROW_KEY: Partial<Record<TaggedTable, string>> = { identity_providers: 'issuer', policies: 'version' };

/** Writes `tags` (id → tag) onto rows of `table` still holding the tag they were read with (`expected`, null for none). */
async function writeTags(tx: PoolClient, table: TaggedTable, tags: Array<{ id: string; tag: string; expected: string | null }>): Promise<number> {
  let written = 0;
  for (let start = 0; start < tags.length; start += BATCH) {
    const batch = tags.slice(start, start + BATCH);
    const idType = table === 'tasks' || table === 'admin_tokens' || table === 'approvals' ? 'uuid' : 'text';
    const key = ROW_KEY[table] ?? 'id';
    const { rowCount } = await tx.query(
      `UPDATE ${table} t SET integrity_tag = n.tag
         FROM unnest($1::${idType}[], $2::text[], $3::text[]) AS n(id, tag, expected)
        WHERE t.${key} = n.id AND t.integrity_tag IS NOT DISTINCT FROM n.expected`,
      [batch.map((row) => row.id), batch.map((row) => row.tag), batch.map((row) => row.expected)],
    );
    written += rowCount ?? 0;
  }
  return written;
}

/** No row tagged. */
function noTags(): RowTagCounts {
  return { tasks: 0, agents: 0, orchestrators: 0, admin_tokens: 0, connectors: 0, identity_providers: 0, policies: 0, approvals: 0 };
}

/** The tag of a connector row as read, or null when its catalogue is not JSON (left untagged: refused). */
function connectorTag(integrity: RowIntegrity, row: ConnectorIntegrityRow): string | null {
  try {
    return integrity.tagConnector(connectorIntegrityFieldsOf(row));
  } catch {
    return null;
  }
}

/** Approvals whose decision is tagged (a used one buys nothing more; a pending one is decided by nobody yet). */
const DECIDED = `status IN ('approved', 'denied')`;

/** Rows the upgrade's tagging reads, tags and commits per transaction (each row locked only for its batch). */
const BACKFILL_BATCH = 1_000;

/** Attempts of one batch that found one of its rows locked past `lock_timeout`, or was chosen as a deadlock's victim. */
const BATCH_ATTEMPTS = 5;

/** How the upgrade's tagging reads and tags the untagged rows of one table. */
interface UntaggedTable {
  table: TaggedTable;
  /** The primary key: the batches walk it in order (keyset), one batch after the last key of the one before. */
  key: string;
  keyType: 'uuid' | 'text';
  columns: string;
  /** Which rows carry a tag at all, beyond having none yet. */
  only?: string;
  /** The row's tag as read, or null to leave it untagged (refused). */
  tag(integrity: RowIntegrity, row: Record<string, unknown>): string | null;
}

/** The tables of each marker field: the upgrade tags each set once, and sets its field when done. */
const UNTAGGED: Record<'base' | 'connectors' | 'authority', UntaggedTable[]> = {
  base: [
    {
      table: 'tasks',
      key: 'id',
      keyType: 'uuid',
      columns: TASK_INTEGRITY_COLUMNS,
      tag: (i, row) => i.tagTask(taskIntegrityFieldsOf(row as unknown as TaskIntegrityRow)),
    },
    {
      table: 'agents',
      key: 'id',
      keyType: 'text',
      columns: 'id, status, jwks',
      tag: (i, row) => i.tagClient('agents', clientFields(row as unknown as ClientTagRow)),
    },
    {
      table: 'orchestrators',
      key: 'id',
      keyType: 'text',
      columns: 'id, status, jwks, allowed_agents',
      tag: (i, row) => i.tagClient('orchestrators', clientFields(row as unknown as ClientTagRow)),
    },
    {
      table: 'admin_tokens',
      key: 'id',
      keyType: 'uuid',
      columns: 'id, role, token_hash, expires_at',
      tag: (i, row) => i.tagAdminToken(adminTokenFields(row as unknown as AdminTokenTagRow)),
    },
  ],
  connectors: [
    {
      table: 'connectors',
      key: 'id',
      keyType: 'text',
      columns: CONNECTOR_INTEGRITY_COLUMNS,
      tag: (i, row) => connectorTag(i, row as unknown as ConnectorIntegrityRow),
    },
  ],
  // An inactive policy keeps no tag: only the active one is ever loaded, and Writ tags a policy when it activates it.
  authority: [
    {
      table: 'identity_providers',
      key: 'issuer',
      keyType: 'text',
      columns: IDENTITY_PROVIDER_INTEGRITY_COLUMNS,
      tag: (i, row) => i.tagIdentityProvider(identityProviderIntegrityFieldsOf(row as unknown as IdentityProviderIntegrityRow)),
    },
    {
      table: 'policies',
      key: 'version',
      keyType: 'text',
      columns: POLICY_INTEGRITY_COLUMNS,
      only: 'active',
      tag: (i, row) => i.tagPolicy(policyIntegrityFieldsOf(row as unknown as PolicyIntegrityRow)),
    },
    {
      table: 'approvals',
      key: 'id',
      keyType: 'uuid',
      columns: APPROVAL_INTEGRITY_COLUMNS,
      only: DECIDED,
      tag: (i, row) => i.tagApproval(approvalIntegrityFieldsOf(row as unknown as ApprovalIntegrityRow)),
    },
  ],
};

/** A lock wait past `lock_timeout`, or a deadlock's victim: the batch is rolled back and run again. */
function isLockConflict(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '55P03' || code === '40P01';
}

/**
 * Walks the rows of `spec.table` that match `condition`, in key order, in batches of
 * {@link BACKFILL_BATCH}: each batch is one short transaction on `work` whose rows are locked
 * (`FOR UPDATE`, waiting for a request that holds one, never skipping it: a skipped row would be
 * left out for good) only until `write` has written them and the batch commits; a batch that hits
 * `lock_timeout` or loses a deadlock is rolled back and run again (up to {@link BATCH_ATTEMPTS}).
 * `write` may answer what to do once its batch has committed (a report of what it wrote).
 * `proceed` is asked before each batch (false: stop there, what was committed stays). Only an
 * empty batch ends the table (a batch whose rows were written meanwhile by Writ comes back
 * shorter). False when stopped.
 */
async function walkInBatches(
  work: PoolClient,
  spec: UntaggedTable,
  columns: string,
  condition: string,
  proceed: () => Promise<boolean>,
  write: (rows: Array<Record<string, unknown>>) => Promise<(() => void) | void>,
): Promise<boolean> {
  const conditions = [condition, ...(spec.only ? [spec.only] : [])];
  let after: string | null = null;
  for (;;) {
    if (!(await proceed())) return false;
    let last: string | null | undefined;
    for (let attempt = 1; last === undefined; attempt++) {
      await work.query('BEGIN');
      try {
        const where = after === null ? conditions : [...conditions, `${spec.key} > $2::${spec.keyType}`];
        const { rows } = await work.query<Record<string, unknown>>(
          `SELECT ${columns} FROM ${spec.table} WHERE ${where.join(' AND ')} ORDER BY ${spec.key} LIMIT $1 FOR UPDATE`,
          after === null ? [BACKFILL_BATCH] : [BACKFILL_BATCH, after],
        );
        const committed = await write(rows);
        await work.query('COMMIT');
        committed?.();
        last = rows.length === 0 ? null : String(rows[rows.length - 1][spec.key]);
      } catch (error) {
        await work.query('ROLLBACK').catch(() => undefined);
        if (!isLockConflict(error) || attempt >= BATCH_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
    if (last === null) return true;
    after = last;
  }
}

/**
 * Tags every untagged row of `spec.table` ({@link walkInBatches}), each written only while still
 * untagged and counted in `row_integrity_backfill_progress` in its batch's commit; `held` throws
 * once the row tag lock is lost.
 */
async function tagTableInBatches(work: PoolClient, spec: UntaggedTable, integrity: RowIntegrity, held: () => Promise<void>): Promise<void> {
  const proceed = async () => {
    await held();
    return true;
  };
  await walkInBatches(work, spec, spec.columns, 'integrity_tag IS NULL', proceed, async (rows) => {
    const tags = rows.flatMap((row) => {
      const tag = spec.tag(integrity, row);
      return tag === null ? [] : [{ id: String(row[spec.key]), tag, expected: null }];
    });
    const tagged = await writeTags(work, spec.table, tags);
    if (tagged > 0) {
      await work.query(
        `INSERT INTO row_integrity_backfill_progress (tagged_table, tagged) VALUES ($1, $2)
           ON CONFLICT (tagged_table) DO UPDATE SET tagged = row_integrity_backfill_progress.tagged + EXCLUDED.tagged`,
        [spec.table, tagged],
      );
    }
  });
}

/**
 * Takes the row tag lock on `lock`'s session, however long another instance's tagging holds it:
 * each wait is one statement bounded by the session's `lock_timeout` (or `statement_timeout`),
 * asked again when it runs out, so that no session setting is changed and the waiting instance
 * shows in `pg_blocking_pids` as waiting for the one tagging.
 */
async function waitForRowTagLock(lock: PoolClient): Promise<void> {
  for (;;) {
    try {
      await lock.query('SELECT pg_advisory_lock($1)', [ROW_TAG_LOCK]);
      return;
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code;
      if (code !== '55P03' && code !== '57014') throw error;
    }
  }
}

/** The marker fields already set, or null with no marker (no tagging ever completed). */
async function markerOf(pool: Pool): Promise<{ connectors_tagged: boolean; providers_policies_approvals_tagged: boolean } | null> {
  const { rows } = await pool.query<{ connectors_tagged: boolean; providers_policies_approvals_tagged: boolean }>(
    'SELECT connectors_tagged, providers_policies_approvals_tagged FROM row_integrity_backfill WHERE id = 1',
  );
  return rows[0] ?? null;
}

/**
 * The upgrade to tagged rows: the first instance to start with the `row_integrity` migration tags
 * every task, agent, orchestrator, admin token, connector, identity provider, active policy and
 * decided approval that has no tag yet (trust on first use: a row is taken as written by Writ as
 * it stands when the batch that reaches it runs). Each table is walked in key order, in batches of
 * {@link BACKFILL_BATCH} rows, each its own short transaction (a row is locked only while its batch
 * runs; memory holds one batch), each adding its count to `row_integrity_backfill_progress` with
 * its tags. A start that stops half-way (a crash, a lost connection) leaves the batches it
 * committed: the next start tags what is still untagged. When every table is done, one
 * transaction sets the marker (`row_integrity_backfill`), takes the counts out of the progress
 * table and records them in `row_integrity.backfilled` (none when there was nothing to tag: a new
 * installation): one event, counts over every run. The whole run holds a session advisory lock
 * on a connection of its own (a second instance starting at once waits, then finds it done); the
 * marker is set by a conditional statement, so that even two runs (a lock lost with its
 * connection) record one event. From then on it never runs again, and an untagged row is refused
 * like a bad one. `'done'` when it ran before.
 * An installation whose marker predates connector tags (`connectors_tagged` false), or the tags of
 * identity providers, the active policy and decided approvals (`providers_policies_approvals_tagged`
 * false), has the tables added since, and only them, tagged once the same way (the event counts only them).
 */
export async function backfillRowIntegrity(
  pool: Pool,
  transaction: AuditedTransaction<AuditEventInput>,
  integrity: RowIntegrity,
): Promise<RowTagCounts | 'done'> {
  // Done is for good (the marker is never unset): a start after it does not wait for the row tag
  // lock, which the re-tag after a master key rotation may hold for as long as it runs.
  const done = await markerOf(pool);
  if (done?.connectors_tagged && done.providers_policies_approvals_tagged) return 'done';
  const lock = await pool.connect();
  const releaseLock = watchCheckedOut(lock);
  let lockBroken = false;
  try {
    await waitForRowTagLock(lock).catch((error: unknown) => {
      // A wait that failed otherwise than by its timeouts leaves the session in doubt: closed, not handed back.
      lockBroken = true;
      throw error;
    });
    try {
      const marker = await markerOf(pool);
      if (marker?.connectors_tagged && marker.providers_policies_approvals_tagged) return 'done';
      const specs = [
        ...(marker ? [] : UNTAGGED.base),
        ...(marker?.connectors_tagged ? [] : UNTAGGED.connectors),
        ...(marker?.providers_policies_approvals_tagged ? [] : UNTAGGED.authority),
      ];
      const work = await pool.connect();
      const releaseWork = watchCheckedOut(work);
      let workFailed = false;
      try {
        // The lock is the session's: a batch run after its connection was lost could overlap another instance's run.
        const held = async () => void (await lock.query('SELECT 1'));
        for (const spec of specs) await tagTableInBatches(work, spec, integrity, held);
      } catch (error) {
        workFailed = true;
        throw error;
      } finally {
        releaseWork(workFailed);
      }
      await lock.query('SELECT 1');
      return await transaction.run<RowTagCounts | 'done'>(
        async (tx) => {
          // Check and set in one statement: only the run that sets the marker records the event.
          const marked = marker
            ? await tx.query(
                `UPDATE row_integrity_backfill SET connectors_tagged = true, providers_policies_approvals_tagged = true
                  WHERE id = 1 AND NOT (connectors_tagged AND providers_policies_approvals_tagged)`,
              )
            : await tx.query(
                'INSERT INTO row_integrity_backfill (id, connectors_tagged, providers_policies_approvals_tagged) VALUES (1, true, true) ON CONFLICT (id) DO NOTHING',
              );
          if (marked.rowCount !== 1) return 'done';
          const progress = await tx.query<{ tagged_table: TaggedTable; tagged: string }>(
            'DELETE FROM row_integrity_backfill_progress WHERE tagged_table = ANY($1) RETURNING tagged_table, tagged',
            [specs.map((spec) => spec.table)],
          );
          const counts = noTags();
          for (const row of progress.rows) counts[row.tagged_table] = Number(row.tagged);
          return counts;
        },
        (counts) =>
          // A new installation has nothing to tag: nothing to record.
          counts === 'done' || Object.values(counts).every((count) => count === 0)
            ? []
            : [
                {
                  type: 'row_integrity.backfilled',
                  outcome: 'success',
                  actor: { type: 'system', id: 'row-integrity' },
                  data: { tagged: counts },
                },
              ],
      );
    } finally {
      lockBroken = await lock.query('SELECT pg_advisory_unlock($1)', [ROW_TAG_LOCK]).then(
        () => false,
        () => true,
      );
    }
  } finally {
    // A connection whose lock could not be released is closed, never handed back holding it.
    releaseLock(lockBroken);
  }
}

/** How the re-tag after a rotation checks the tag of a row of one table (read with its `integrity_tag`) under the configured keys. */
const VERIFY: Record<TaggedTable, (integrity: RowIntegrity, row: Record<string, unknown>, tag: string) => boolean> = {
  tasks: (i, row, tag) => i.verifyTask(taskIntegrityFieldsOf(row as unknown as TaskIntegrityRow), tag),
  agents: (i, row, tag) => i.verifyClient('agents', clientFields(row as unknown as ClientTagRow), tag),
  orchestrators: (i, row, tag) => i.verifyClient('orchestrators', clientFields(row as unknown as ClientTagRow), tag),
  admin_tokens: (i, row, tag) => i.verifyAdminToken(adminTokenFields(row as unknown as AdminTokenTagRow), tag),
  connectors: (i, row) => i.verifyConnectorRow(row as unknown as ConnectorIntegrityRow),
  identity_providers: (i, row, tag) => i.verifyIdentityProvider(identityProviderIntegrityFieldsOf(row as unknown as IdentityProviderIntegrityRow), tag),
  policies: (i, row, tag) => i.verifyPolicy(policyIntegrityFieldsOf(row as unknown as PolicyIntegrityRow), tag),
  approvals: (i, row, tag) => i.verifyApproval(approvalIntegrityFieldsOf(row as unknown as ApprovalIntegrityRow), tag),
};

/** Every tagged table, in the order the re-tag walks them. */
const TAGGED_TABLES: UntaggedTable[] = [...UNTAGGED.base, ...UNTAGGED.connectors, ...UNTAGGED.authority];

/** What the re-tag after a rotation reports as it goes, and asks whether to stop (a shutdown). */
export interface RetagControl {
  /** Checked before each batch: true ends the re-tag there (what was committed stays, counted). */
  stopped(): boolean;
  /** After each batch that re-tagged rows: the rows of `table` re-tagged since the last `master_key.rewrapped` event, over every run. */
  progress(table: TaggedTable, retagged: number): void;
}

/** No stop, no report. */
const UNCONTROLLED_RETAG: RetagControl = { stopped: () => false, progress: () => undefined };

/**
 * Re-tags every tagged row of `spec.table` ({@link walkInBatches}) whose tag is a previous key's
 * and verifies under it, under the current key, each only while it still holds the tag read (a
 * row already under the current key is left: a resumed run skips it; a row whose tag verifies
 * under no configured key is left as it is, refused and reported by `RowIntegrity`), counted in
 * `master_key_retag_progress` in its batch's commit and reported to `control` with the count over
 * every run. False when `control` stopped it.
 */
function retagTableInBatches(work: PoolClient, spec: UntaggedTable, integrity: RowIntegrity, control: RetagControl): Promise<boolean> {
  const columns = /\bintegrity_tag\b/.test(spec.columns) ? spec.columns : `${spec.columns}, integrity_tag`;
  return walkInBatches(
    work,
    spec,
    columns,
    'integrity_tag IS NOT NULL',
    async () => !control.stopped(),
    async (rows) => {
      const tags = rows.flatMap((row) => {
        const expected = row.integrity_tag as string;
        if (integrity.isCurrent(expected) || !VERIFY[spec.table](integrity, row, expected)) return [];
        const tag = spec.tag(integrity, row);
        return tag === null ? [] : [{ id: String(row[spec.key]), tag, expected }];
      });
      const retagged = await writeTags(work, spec.table, tags);
      if (retagged === 0) return;
      const progress = await work.query<{ retagged: string }>(
        `INSERT INTO master_key_retag_progress (tagged_table, retagged) VALUES ($1, $2)
         ON CONFLICT (tagged_table) DO UPDATE SET retagged = master_key_retag_progress.retagged + EXCLUDED.retagged
       RETURNING retagged`,
        [spec.table, retagged],
      );
      control.progress(spec.table, Number(progress.rows[0].retagged));
    },
  );
}

/**
 * After a master key rotation: tags again under the current key every row whose tag verifies
 * under a previous one (rows whose tag verifies under no configured key are left as they are,
 * refused). Each table is walked in key order in batches of {@link BACKFILL_BATCH} rows, each its
 * own short transaction (a row is locked only while its batch runs, so ending a task or issuing
 * a credential waits at most for one batch; memory holds one batch), each adding its count to
 * `master_key_retag_progress` with its tags. A run that stops half-way (a crash, a lost
 * connection, a shutdown: `control.stopped()`) leaves the batches it committed; the next run
 * skips the rows already under the current key. One instance at a time (the row tag lock, on
 * the connection that runs the batches, waited for as the upgrade's tagging does); each row is
 * written only while it still holds the tag read. The counts over every run are taken with
 * {@link takeRetagCounts} when they are reported. `'stopped'` when stopped before the end.
 */
export async function retagUnderCurrentMasterKey(pool: Pool, integrity: RowIntegrity, control: RetagControl = UNCONTROLLED_RETAG): Promise<'done' | 'stopped'> {
  // One connection holds the lock and runs the batches: the re-wrap that calls this already holds one of its own.
  const work = await pool.connect();
  const release = watchCheckedOut(work);
  // A connection whose lock could not be released (or whose wait failed) is closed, never handed back holding it.
  let broken = false;
  try {
    await waitForRowTagLock(work).catch((error: unknown) => {
      broken = true;
      throw error;
    });
    try {
      for (const spec of TAGGED_TABLES) {
        if (!(await retagTableInBatches(work, spec, integrity, control))) return 'stopped';
      }
      return 'done';
    } finally {
      broken = await work.query('SELECT pg_advisory_unlock($1)', [ROW_TAG_LOCK]).then(
        () => broken,
        () => true,
      );
    }
  } finally {
    release(broken);
  }
}

/**
 * Takes, on `tx` (the transaction that records the `master_key.rewrapped` event), the rows
 * re-tagged since the last event, per table, over every run of {@link retagUnderCurrentMasterKey}:
 * each row is counted in one event.
 */
export async function takeRetagCounts(tx: PoolClient): Promise<RowTagCounts> {
  const { rows } = await tx.query<{ tagged_table: TaggedTable; retagged: string }>('DELETE FROM master_key_retag_progress RETURNING tagged_table, retagged');
  const counts = noTags();
  for (const row of rows) counts[row.tagged_table] = Number(row.retagged);
  return counts;
}
