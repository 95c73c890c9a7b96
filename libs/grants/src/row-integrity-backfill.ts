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
 * Tags, in one short transaction on `work`, the next batch of untagged rows of `spec.table` after
 * `after` in key order: they are locked (`FOR UPDATE`, waiting for a request that holds one, never
 * skipping it: a skipped row would stay untagged, refused for good) only until the batch commits,
 * written only while still untagged, and counted in `row_integrity_backfill_progress` in the same
 * commit. Returns the last key read (null when none is left) and the rows tagged.
 */
async function tagBatch(
  work: PoolClient,
  spec: UntaggedTable,
  integrity: RowIntegrity,
  after: string | null,
): Promise<{ last: string | null; tagged: number }> {
  await work.query('BEGIN');
  try {
    const conditions = ['integrity_tag IS NULL', ...(spec.only ? [spec.only] : []), ...(after === null ? [] : [`${spec.key} > $2::${spec.keyType}`])];
    const { rows } = await work.query<Record<string, unknown>>(
      `SELECT ${spec.columns} FROM ${spec.table} WHERE ${conditions.join(' AND ')} ORDER BY ${spec.key} LIMIT $1 FOR UPDATE`,
      after === null ? [BACKFILL_BATCH] : [BACKFILL_BATCH, after],
    );
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
    await work.query('COMMIT');
    return { last: rows.length === 0 ? null : String(rows[rows.length - 1][spec.key]), tagged };
  } catch (error) {
    await work.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** Tags every untagged row of `spec.table`, batch after batch; `held` throws once the row tag lock is lost. */
async function tagTableInBatches(work: PoolClient, spec: UntaggedTable, integrity: RowIntegrity, held: () => Promise<void>): Promise<void> {
  let after: string | null = null;
  for (;;) {
    await held();
    let batch: { last: string | null; tagged: number } | undefined;
    for (let attempt = 1; batch === undefined; attempt++) {
      try {
        batch = await tagBatch(work, spec, integrity, after);
      } catch (error) {
        if (!isLockConflict(error) || attempt >= BATCH_ATTEMPTS) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
    // Only an empty batch ends the table: a batch whose rows were tagged meanwhile by Writ comes back shorter.
    if (batch.last === null) return;
    after = batch.last;
  }
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

/**
 * After a master key rotation: tags again under the current key every row whose tag verifies
 * under a previous one (rows whose tag verifies under no configured key are left as they are,
 * refused). One instance at a time, each row only while it still holds the tag read.
 */
export async function retagUnderCurrentMasterKey(pool: Pool, integrity: RowIntegrity): Promise<RowTagCounts> {
  // One connection holds the lock and runs the transaction: the re-wrap that calls this already holds one of its own.
  const tx = await pool.connect();
  // A connection whose lock could not be released is closed, never handed back holding it.
  let clean = false;
  try {
    await tx.query('SELECT pg_advisory_lock($1)', [ROW_TAG_LOCK]);
    try {
      await tx.query('BEGIN');
      const counts = await tagRowsVerified(tx, integrity);
      await tx.query('COMMIT');
      return counts;
    } catch (error) {
      await tx.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      clean = await tx.query('SELECT pg_advisory_unlock($1)', [ROW_TAG_LOCK]).then(
        () => true,
        () => false,
      );
    }
  } finally {
    tx.release(!clean);
  }
}

/** Re-tags, under the current key, the rows whose tag is not the current key's but verifies under a previous one. */
async function tagRowsVerified(tx: PoolClient, integrity: RowIntegrity): Promise<RowTagCounts> {
  const stale = (tag: string | null): tag is string => tag !== null && !integrity.isCurrent(tag);
  const tasks = (
    await tx.query<TaskIntegrityRow>(`SELECT ${TASK_INTEGRITY_COLUMNS}, integrity_tag FROM tasks WHERE integrity_tag IS NOT NULL ORDER BY id`)
  ).rows.filter((row) => stale(row.integrity_tag) && integrity.verifyTask(taskIntegrityFieldsOf(row), row.integrity_tag));
  const agents = (await tx.query<ClientTagRow>(`SELECT id, status, jwks, integrity_tag FROM agents WHERE integrity_tag IS NOT NULL ORDER BY id`)).rows.filter(
    (row) => stale(row.integrity_tag) && integrity.verifyClient('agents', clientFields(row), row.integrity_tag),
  );
  const orchestrators = (
    await tx.query<ClientTagRow>(`SELECT id, status, jwks, allowed_agents, integrity_tag FROM orchestrators WHERE integrity_tag IS NOT NULL ORDER BY id`)
  ).rows.filter((row) => stale(row.integrity_tag) && integrity.verifyClient('orchestrators', clientFields(row), row.integrity_tag));
  const adminTokens = (
    await tx.query<AdminTokenTagRow>(`SELECT id, role, token_hash, expires_at, integrity_tag FROM admin_tokens WHERE integrity_tag IS NOT NULL ORDER BY id`)
  ).rows.filter((row) => stale(row.integrity_tag) && integrity.verifyAdminToken(adminTokenFields(row), row.integrity_tag));
  const connectors = (
    await tx.query<ConnectorIntegrityRow>(`SELECT ${CONNECTOR_INTEGRITY_COLUMNS} FROM connectors WHERE integrity_tag IS NOT NULL ORDER BY id`)
  ).rows.filter((row) => stale(row.integrity_tag) && integrity.verifyConnectorRow(row));
  const providers = (
    await tx.query<IdentityProviderIntegrityRow>(
      `SELECT ${IDENTITY_PROVIDER_INTEGRITY_COLUMNS} FROM identity_providers WHERE integrity_tag IS NOT NULL ORDER BY issuer`,
    )
  ).rows.filter((row) => stale(row.integrity_tag) && integrity.verifyIdentityProvider(identityProviderIntegrityFieldsOf(row), row.integrity_tag));
  const policies = (
    await tx.query<PolicyIntegrityRow>(`SELECT ${POLICY_INTEGRITY_COLUMNS} FROM policies WHERE active AND integrity_tag IS NOT NULL`)
  ).rows.filter((row) => stale(row.integrity_tag) && integrity.verifyPolicy(policyIntegrityFieldsOf(row), row.integrity_tag));
  const approvals = (
    await tx.query<ApprovalIntegrityRow>(`SELECT ${APPROVAL_INTEGRITY_COLUMNS} FROM approvals WHERE ${DECIDED} AND integrity_tag IS NOT NULL ORDER BY id`)
  ).rows.filter((row) => stale(row.integrity_tag) && integrity.verifyApproval(approvalIntegrityFieldsOf(row), row.integrity_tag));
  return {
    tasks: await writeTags(
      tx,
      'tasks',
      tasks.map((row) => ({ id: row.id, tag: integrity.tagTask(taskIntegrityFieldsOf(row)), expected: row.integrity_tag })),
    ),
    agents: await writeTags(
      tx,
      'agents',
      agents.map((row) => ({ id: row.id, tag: integrity.tagClient('agents', clientFields(row)), expected: row.integrity_tag })),
    ),
    orchestrators: await writeTags(
      tx,
      'orchestrators',
      orchestrators.map((row) => ({ id: row.id, tag: integrity.tagClient('orchestrators', clientFields(row)), expected: row.integrity_tag })),
    ),
    admin_tokens: await writeTags(
      tx,
      'admin_tokens',
      adminTokens.map((row) => ({ id: row.id, tag: integrity.tagAdminToken(adminTokenFields(row)), expected: row.integrity_tag })),
    ),
    connectors: await writeTags(
      tx,
      'connectors',
      connectors.map((row) => ({ id: row.id, tag: integrity.tagConnector(connectorIntegrityFieldsOf(row)), expected: row.integrity_tag })),
    ),
    identity_providers: await writeTags(
      tx,
      'identity_providers',
      providers.map((row) => ({ id: row.issuer, tag: integrity.tagIdentityProvider(identityProviderIntegrityFieldsOf(row)), expected: row.integrity_tag })),
    ),
    policies: await writeTags(
      tx,
      'policies',
      policies.map((row) => ({ id: row.version, tag: integrity.tagPolicy(policyIntegrityFieldsOf(row)), expected: row.integrity_tag })),
    ),
    approvals: await writeTags(
      tx,
      'approvals',
      approvals.map((row) => ({ id: row.id, tag: integrity.tagApproval(approvalIntegrityFieldsOf(row)), expected: row.integrity_tag })),
    ),
  };
}
