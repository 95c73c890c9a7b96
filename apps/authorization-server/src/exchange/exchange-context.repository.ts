import { grantsIssuedSql, RowIntegrity, taskIntegrityFieldsOf } from '@writ/grants';
import { Inject, Injectable, OnApplicationShutdown } from '@nestjs/common';
import DataLoader from 'dataloader';
import { RUNTIME, type Runtime } from '@writ/platform';
import type { Pool } from 'pg';
import {
  CONNECTOR_CHANGED_CHANNEL,
  ConnectorDetail,
  ConnectorEntity,
  ConnectorOperation,
  ListenedCache,
  PG_POOL,
  RowOf,
  TaskEntity,
  TaskStatus,
} from '@writ/database';

/** A task as the token exchange needs it. */
export interface ExchangeTask {
  id: string;
  agentId: string;
  orchestratorId: string;
  purpose: string;
  allowed: ConnectorDetail[];
  onBehalfOf: string | null;
  /** The verified user the task acts for, or null. */
  user: { issuer: string; subject: string } | null;
  metadata: Record<string, unknown>;
  status: TaskStatus;
  taskTokenJti: string;
  grantsIssued: number;
  refusals: number;
  outOfPurposeRequests: number;
  createdAt: Date;
  expiresAt: Date;
}

/** A connector's catalogue, as the policy sees it. */
export interface CatalogueConnector {
  id: string;
  name: string;
  operations: ConnectorOperation[];
  /** The connector's upstream credential type (`oauth2_authorization_code`: per-user connected accounts). */
  credentialType: string | null;
  /** The connector row's `version` this was read at (not policy input: the issuing statement compares it). */
  version: string;
}

/** Most connector catalogues held (a registry is small; the bound only keeps memory finite). */
const MAX_CATALOGUES = 1_000;

/** Longest connector id a notification can name (longer payloads drop every catalogue). */
const MAX_CONNECTOR_ID_LENGTH = 256;

/** Most tasks read in one query (see {@link ExchangeContextRepository.task}). */
const MAX_TASKS_PER_READ = 128;

/** A task id as `tasks.id` (uuid) takes it: anything else names no task. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type TaskRow = Omit<RowOf<TaskEntity>, 'status_reason' | 'ended_at'> & { grants_issued: number; integrity_tag: string | null };

/** A task row as read: its jsonb columns as PostgreSQL writes them out, parsed here (see {@link ExchangeContextRepository.verified}). */
type TaskRowRead = Omit<TaskRow, 'allowed' | 'metadata'> & { allowed_text: string; metadata_text: string };

/** Most task rows whose verified integrity tag is remembered (see {@link ExchangeContextRepository.verified}). */
const MAX_VERIFIED_TASKS = 10_000;

/**
 * Most characters of task rows remembered in all (see {@link ExchangeContextRepository.verified}):
 * a row is what its orchestrator declared, up to the Tasks API's 64 KiB body, so the count of
 * rows alone would let one orchestrator hold ~10 000 × 64 KiB of every instance's memory.
 */
const MAX_VERIFIED_TASK_CHARS = 16 * 1024 * 1024;

/**
 * The reads of the token-exchange hot path, in plain SQL. Connector catalogues (the policy's
 * input) are held in memory and dropped as soon as a change to the connector is notified on
 * {@link CONNECTOR_CHANGED_CHANNEL}; nothing is held while that channel is not listened to
 * (see `ListenedCache`). A notification arrives shortly after the change commits, not before:
 * the statement that records a credential requires the connector row to be still at the
 * `version` its catalogue was read at, and the operation the one it was decided on
 * (`catalogue_changed` otherwise: the catalogue is dropped with {@link forget} and the request
 * decided again on a fresh read).
 */
@Injectable()
export class ExchangeContextRepository implements OnApplicationShutdown {
  private readonly catalogue: ListenedCache<CatalogueConnector>;
  private readonly integrity: RowIntegrity;
  /** Per task id, the row as it was when its tag last verified (see {@link verified}). */
  private readonly verifiedTasks = new Map<string, string>();
  /** The characters {@link verifiedTasks} holds (its rows' lengths). */
  private verifiedChars = 0;
  /** Task reads, batched per turn of the event loop and never cached (see {@link task}). */
  private readonly tasks = new DataLoader<string, ExchangeTask | undefined>((ids) => this.readTasks(ids), {
    cache: false,
    maxBatchSize: MAX_TASKS_PER_READ,
    batchScheduleFn: (callback) => setImmediate(callback),
  });

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    @Inject(RUNTIME) runtime: Runtime,
  ) {
    this.catalogue = new ListenedCache(runtime.changes, CONNECTOR_CHANGED_CHANNEL, { maxEntries: MAX_CATALOGUES, maxKeyLength: MAX_CONNECTOR_ID_LENGTH });
    this.integrity = runtime.rowIntegrity;
  }

  /** Stops listening (the runtime's connection serves other apps). */
  onApplicationShutdown(): void {
    this.catalogue.close();
  }

  /**
   * The task as it is now, or undefined: also when its row's integrity tag does not verify (a row
   * inserted or changed outside Writ is refused as if it did not exist). Never remembered (its status and counters are the
   * policy's input, and change with every grant): each call reads it. The reads of the
   * exchanges that reach this point in the same turn of the event loop go to PostgreSQL as one
   * query (DataLoader, no cache): one round trip for several exchanges instead of one each, a
   * read no older than a read of its own would be.
   */
  task(id: string): Promise<ExchangeTask | undefined> {
    return this.tasks.load(id);
  }

  private async readTasks(ids: readonly string[]): Promise<Array<ExchangeTask | undefined>> {
    const valid = [...new Set(ids.filter((id) => UUID.test(id)))];
    if (valid.length === 0) return ids.map(() => undefined);
    const { rows } = await this.pool.query<TaskRowRead>({
      name: 'writ_exchange_tasks',
      text: `SELECT id, agent_id, orchestrator_id, purpose, allowed::text AS allowed_text, on_behalf_of, user_issuer, user_subject, metadata::text AS metadata_text,
                    status, task_token_jti, ${grantsIssuedSql('tasks')} AS grants_issued, refusals, out_of_purpose_requests, created_at, expires_at, integrity_tag
               FROM tasks WHERE id = ANY($1::uuid[])`,
      values: [valid],
    });
    const byId = new Map<string, TaskRow>();
    for (const read of rows) {
      const { allowed_text, metadata_text, ...rest } = read;
      // As pg parses jsonb: JSON.parse of PostgreSQL's text.
      const row: TaskRow = { ...rest, allowed: JSON.parse(allowed_text) as TaskRow['allowed'], metadata: JSON.parse(metadata_text) as TaskRow['metadata'] };
      if (this.verified(row, read)) byId.set(row.id.toLowerCase(), row);
    }
    const handedOut = new Set<TaskRow>();
    // Each caller gets a task of its own, nothing shared with another caller of the same batch.
    return ids.map((id) => {
      const row = byId.get(id.toLowerCase());
      if (!row) return undefined;
      const own = handedOut.has(row) ? structuredClone(row) : row;
      handedOut.add(row);
      return toExchangeTask(own);
    });
  }

  /**
   * Whether a task row is one Writ wrote: its tag covers what decides what the task may get. A
   * row read again exactly as it was when its tag last verified (every tagged column, its jsonb as
   * PostgreSQL's text, and the tag: compared whole) is not verified again: the canonical text and
   * the HMAC are the same work with the same answer, and a task is read at every exchange.
   */
  private verified(row: TaskRow, read: TaskRowRead): boolean {
    const seen = JSON.stringify([
      read.id,
      read.agent_id,
      read.orchestrator_id,
      read.purpose,
      read.allowed_text,
      read.on_behalf_of,
      read.user_issuer,
      read.user_subject,
      read.metadata_text,
      read.task_token_jti,
      instantOf(read.created_at),
      instantOf(read.expires_at),
      read.integrity_tag,
    ]);
    const held = this.verifiedTasks.get(row.id);
    if (held === seen) return true;
    if (!this.integrity.verifyTask(taskIntegrityFieldsOf(row), row.integrity_tag)) return false;
    if (held !== undefined) {
      this.verifiedTasks.delete(row.id);
      this.verifiedChars -= held.length;
    }
    // Bounded in rows and in characters: past either, everything goes (it is only a memo).
    if (this.verifiedTasks.size >= MAX_VERIFIED_TASKS || this.verifiedChars + seen.length > MAX_VERIFIED_TASK_CHARS) {
      this.verifiedTasks.clear();
      this.verifiedChars = 0;
    }
    this.verifiedTasks.set(row.id, seen);
    this.verifiedChars += seen.length;
    return true;
  }

  /** Drops a connector's cached catalogue (it changed under an issuance). */
  forget(connectorId: string | null): void {
    if (connectorId === null) this.catalogue.reset();
    else this.catalogue.forget(connectorId);
  }

  /** The registered connectors among `ids` (those whose integrity tag verifies). */
  async connectors(ids: string[]): Promise<CatalogueConnector[]> {
    const cached = ids.map((id) => this.catalogue.get(id)).filter((connector) => connector !== undefined);
    if (cached.length === ids.length) return cached;
    const mark = this.catalogue.mark();
    const { rows } = await this.pool.query<
      Pick<RowOf<ConnectorEntity>, 'id' | 'name' | 'operations' | 'credential_type' | 'kind' | 'base_url'> & {
        operations_text: string;
        integrity_tag: string | null;
        version: string;
      }
    >(
      `SELECT id, name, kind, base_url, operations, operations::text AS operations_text, credential_type, integrity_tag, version::text AS version FROM connectors WHERE id = ANY($1::text[])`,
      [ids],
    );
    // A connector whose catalogue was changed outside Writ (its tag does not verify) is unknown.
    const found: CatalogueConnector[] = rows
      .filter((row) => this.integrity.verifyConnectorRow(row))
      .map((row) => ({ id: row.id, name: row.name, operations: row.operations, credentialType: row.credential_type, version: row.version }));
    for (const connector of found) this.catalogue.remember(connector.id, connector, mark);
    return found;
  }

  /**
   * The policy's `connections`: for each of `connectors` that uses connected accounts, the
   * user's connection (status and scopes), or null without a user or a connection.
   */
  async connections(connectors: CatalogueConnector[], user: ExchangeTask['user']): Promise<Record<string, { status: string; scopes: string[] } | null>> {
    const ids = connectors.filter((connector) => connector.credentialType === 'oauth2_authorization_code').map((connector) => connector.id);
    if (ids.length === 0) return {};
    const result: Record<string, { status: string; scopes: string[] } | null> = Object.fromEntries(ids.map((id) => [id, null]));
    if (!user) return result;
    const { rows } = await this.pool.query<{ connector_id: string; status: string; scopes: string[] }>(
      `SELECT connector_id, status, scopes FROM connected_accounts WHERE connector_id = ANY($1::text[]) AND user_issuer = $2 AND user_subject = $3`,
      [ids, user.issuer, user.subject],
    );
    for (const row of rows) result[row.connector_id] = { status: row.status, scopes: row.scopes };
    return result;
  }
}

/**
 * A timestamp as the memo compares it: `pg` reads `infinity` (which a DBA can set) as the number
 * Infinity, not a Date; that row is refused by its tag, without failing the batch read with it.
 */
function instantOf(at: Date): number | string {
  return at instanceof Date ? at.getTime() : String(at);
}

function toExchangeTask(row: TaskRow): ExchangeTask {
  return {
    id: row.id,
    agentId: row.agent_id,
    orchestratorId: row.orchestrator_id,
    purpose: row.purpose,
    allowed: row.allowed,
    onBehalfOf: row.on_behalf_of,
    user: row.user_subject && row.user_issuer ? { issuer: row.user_issuer, subject: row.user_subject } : null,
    metadata: row.metadata,
    status: row.status,
    taskTokenJti: row.task_token_jti,
    grantsIssued: row.grants_issued,
    refusals: row.refusals,
    outOfPurposeRequests: row.out_of_purpose_requests,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
}
