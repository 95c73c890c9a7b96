import type { Pool, PoolClient } from 'pg';
import type { AuditEventInput } from '@writ/audit';
import type { AuditedTransaction } from '@writ/database';
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

/** Runs `work` holding the row tag lock (a session advisory lock: a second instance waits for the first, then finds nothing left to do). */
async function underRowTagLock<T>(pool: Pool, work: () => Promise<T>): Promise<T> {
  const lock = await pool.connect();
  try {
    await lock.query('SELECT pg_advisory_lock($1)', [ROW_TAG_LOCK]);
    try {
      return await work();
    } finally {
      await lock.query('SELECT pg_advisory_unlock($1)', [ROW_TAG_LOCK]);
    }
  } finally {
    lock.release();
  }
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

/** Tags, in `tx`, every connector that has no tag (locked `FOR UPDATE` until the marker commits with them). */
async function tagUntaggedConnectors(tx: PoolClient, integrity: RowIntegrity): Promise<number> {
  const connectors = await tx.query<ConnectorIntegrityRow>(
    `SELECT ${CONNECTOR_INTEGRITY_COLUMNS} FROM connectors WHERE integrity_tag IS NULL ORDER BY id FOR UPDATE`,
  );
  return writeTags(
    tx,
    'connectors',
    connectors.rows.flatMap((row) => {
      const tag = connectorTag(integrity, row);
      return tag === null ? [] : [{ id: row.id, tag, expected: row.integrity_tag }];
    }),
  );
}

/** Approvals whose decision is tagged (a used one buys nothing more; a pending one is decided by nobody yet). */
const DECIDED = `status IN ('approved', 'denied')`;

/**
 * Tags, in `tx`, every identity provider, the active policy and every decided approval that have
 * no tag (locked `FOR UPDATE` until the marker commits with them). An inactive policy keeps none:
 * only the active one is ever loaded, and Writ tags a policy when it activates it.
 */
async function tagUntaggedProvidersPoliciesApprovals(
  tx: PoolClient,
  integrity: RowIntegrity,
): Promise<Pick<RowTagCounts, 'identity_providers' | 'policies' | 'approvals'>> {
  const providers = await tx.query<IdentityProviderIntegrityRow>(
    `SELECT ${IDENTITY_PROVIDER_INTEGRITY_COLUMNS} FROM identity_providers WHERE integrity_tag IS NULL ORDER BY issuer FOR UPDATE`,
  );
  const policies = await tx.query<PolicyIntegrityRow>(`SELECT ${POLICY_INTEGRITY_COLUMNS} FROM policies WHERE active AND integrity_tag IS NULL FOR UPDATE`);
  const approvals = await tx.query<ApprovalIntegrityRow>(
    `SELECT ${APPROVAL_INTEGRITY_COLUMNS} FROM approvals WHERE ${DECIDED} AND integrity_tag IS NULL ORDER BY id FOR UPDATE`,
  );
  return {
    identity_providers: await writeTags(
      tx,
      'identity_providers',
      providers.rows.map((row) => ({ id: row.issuer, tag: integrity.tagIdentityProvider(identityProviderIntegrityFieldsOf(row)), expected: null })),
    ),
    policies: await writeTags(
      tx,
      'policies',
      policies.rows.map((row) => ({ id: row.version, tag: integrity.tagPolicy(policyIntegrityFieldsOf(row)), expected: null })),
    ),
    approvals: await writeTags(
      tx,
      'approvals',
      approvals.rows.map((row) => ({ id: row.id, tag: integrity.tagApproval(approvalIntegrityFieldsOf(row)), expected: null })),
    ),
  };
}

/** Tags, in `tx`, every row of the tagged tables that has no tag (locked `FOR UPDATE` until the marker commits with them). */
async function tagUntagged(tx: PoolClient, integrity: RowIntegrity): Promise<RowTagCounts> {
  const where = 'integrity_tag IS NULL';
  const keep = (tag: string | null) => tag === null;
  const tasks = await tx.query<TaskIntegrityRow>(`SELECT ${TASK_INTEGRITY_COLUMNS}, integrity_tag FROM tasks WHERE ${where} ORDER BY id FOR UPDATE`);
  const agents = await tx.query<ClientTagRow>(`SELECT id, status, jwks, integrity_tag FROM agents WHERE ${where} ORDER BY id FOR UPDATE`);
  const orchestrators = await tx.query<ClientTagRow>(
    `SELECT id, status, jwks, allowed_agents, integrity_tag FROM orchestrators WHERE ${where} ORDER BY id FOR UPDATE`,
  );
  const adminTokens = await tx.query<AdminTokenTagRow>(
    `SELECT id, role, token_hash, expires_at, integrity_tag FROM admin_tokens WHERE ${where} ORDER BY id FOR UPDATE`,
  );
  return {
    tasks: await writeTags(
      tx,
      'tasks',
      tasks.rows
        .filter((row) => keep(row.integrity_tag))
        .map((row) => ({ id: row.id, tag: integrity.tagTask(taskIntegrityFieldsOf(row)), expected: row.integrity_tag })),
    ),
    agents: await writeTags(
      tx,
      'agents',
      agents.rows
        .filter((row) => keep(row.integrity_tag))
        .map((row) => ({ id: row.id, tag: integrity.tagClient('agents', clientFields(row)), expected: row.integrity_tag })),
    ),
    orchestrators: await writeTags(
      tx,
      'orchestrators',
      orchestrators.rows
        .filter((row) => keep(row.integrity_tag))
        .map((row) => ({ id: row.id, tag: integrity.tagClient('orchestrators', clientFields(row)), expected: row.integrity_tag })),
    ),
    admin_tokens: await writeTags(
      tx,
      'admin_tokens',
      adminTokens.rows
        .filter((row) => keep(row.integrity_tag))
        .map((row) => ({ id: row.id, tag: integrity.tagAdminToken(adminTokenFields(row)), expected: row.integrity_tag })),
    ),
    connectors: await tagUntaggedConnectors(tx, integrity),
    ...(await tagUntaggedProvidersPoliciesApprovals(tx, integrity)),
  };
}

/**
 * The upgrade to tagged rows: the first instance to start with the `row_integrity` migration tags
 * every task, agent, orchestrator, admin token, connector, identity provider, active policy and decided approval that has no tag yet (trust on first use: whatever the rows
 * hold at that moment is taken as written by Writ), records `row_integrity.backfilled` with the
 * counts (none when there was nothing to tag: a new installation), and marks it done in `row_integrity_backfill`, all in one transaction, under a session
 * advisory lock (a second instance starting at once waits, then finds it done). From then on it
 * never runs again, and an untagged row is refused like a bad one. `'done'` when it ran before.
 * An installation whose marker predates connector tags (`connectors_tagged` false), or the tags of
 * identity providers, the active policy and decided approvals (`providers_policies_approvals_tagged`
 * false), has the tables added since, and only them, tagged once the same way (the event counts only them).
 */
export async function backfillRowIntegrity(
  pool: Pool,
  transaction: AuditedTransaction<AuditEventInput>,
  integrity: RowIntegrity,
): Promise<RowTagCounts | 'done'> {
  return underRowTagLock(pool, () =>
    transaction.run<RowTagCounts | 'done'>(
      async (tx) => {
        const marker = await tx.query<{ connectors_tagged: boolean; providers_policies_approvals_tagged: boolean }>(
          'SELECT connectors_tagged, providers_policies_approvals_tagged FROM row_integrity_backfill WHERE id = 1',
        );
        const done = marker.rows[0];
        if (done?.connectors_tagged && done.providers_policies_approvals_tagged) return 'done';
        if (done) {
          // Upgraded from an earlier set of tagged tables: only the tables added since are tagged now, once.
          const counts = {
            ...noTags(),
            ...(done.connectors_tagged ? {} : { connectors: await tagUntaggedConnectors(tx, integrity) }),
            ...(done.providers_policies_approvals_tagged ? {} : await tagUntaggedProvidersPoliciesApprovals(tx, integrity)),
          };
          await tx.query('UPDATE row_integrity_backfill SET connectors_tagged = true, providers_policies_approvals_tagged = true WHERE id = 1');
          return counts;
        }
        const counts = await tagUntagged(tx, integrity);
        await tx.query('INSERT INTO row_integrity_backfill (id, connectors_tagged, providers_policies_approvals_tagged) VALUES (1, true, true)');
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
    ),
  );
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
