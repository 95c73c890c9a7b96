import type { Pool, PoolClient } from 'pg';
import { v7 as uuidv7 } from 'uuid';
import {
  type AuditedTransaction,
  EXPECTATION_FAILED,
  executeStatement,
  NotALiteralError,
  forgetPrepared,
  isMissingStatement,
  prepareOnce,
  type SessionStatement,
  sqlLiteral,
  type TransactionWork,
  wellFormed,
  watchCheckedOut,
} from '@writ/database';
import type { AuditEventInput, AuditQuery, AuditRecord, AuditVerification } from './audit-event';
import { chainHashOfCanonicalData, verifiedChainHash } from './audit-hash';
import { normaliseEventData } from './audit-canonical';
import { storedTime } from './audit-time';
import {
  CheckpointFileError,
  checkpointDigest,
  CheckpointKeyring,
  checkpointKeyring,
  CheckpointPublicKey,
  checkpointSignatureValid,
  SignedCheckpoint,
} from './audit-checkpoint';
import { CHECKPOINT_COLUMNS, checkpointFromRow, CheckpointRow, readCheckpointFile } from './audit-checkpointer';
import { PRUNE_COLUMNS, pruneMarkerDigest, pruneMarkerFromRow, PruneRow, pruneMarkerSignatureValid } from './audit-prune';

/** Thrown when events could not be committed: the caller must not go on (fail closed). */
export class AuditUnavailableError extends Error {
  /**
   * @param outcomeUnknown the connection was lost with the transaction's end in flight: it may
   * have committed (only its answer lost), so its work must not be run again.
   */
  constructor(
    cause?: unknown,
    readonly outcomeUnknown = false,
  ) {
    super('the audit log could not be written');
    this.name = 'AuditUnavailableError';
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

/** Work done in the same transaction as its events; what it returns decides the events. */
export type AuditedWork<T> = (client: PoolClient) => Promise<T>;

/**
 * Work that many units of one batch can do in one statement (e.g. inserting every credential
 * issued in the batch at once): the units of a batch with the same `kind` are run together,
 * in one round trip instead of one each.
 */
export interface BatchableWork<P, R> {
  /** Units of the same kind in one batch run together; `run` must be the same for a kind. */
  kind: string;
  /** This unit's parameters. */
  params: P;
  /** Runs every unit's parameters, in order; returns one result per parameter, in order. */
  run: (client: PoolClient, params: P[]) => Promise<R[]>;
  /**
   * The same work as one SQL statement with its values as literals, sent in the message that
   * locks the chain head (each statement of a message runs on its own snapshot, after the one
   * before it: this one sees everything committed before the lock was granted): a batch then
   * costs one round trip less. `sql` quotes strings with `literal` (or returns `undefined`:
   * `run` then does the work); `parse` turns its rows into one result per parameter, in order.
   * `statements` are prepared on the connection beforehand (once per connection), for a `sql`
   * that runs one with `EXECUTE` (`executeStatement`: nothing to parse or plan per batch).
   */
  inline?: {
    statements?: readonly SessionStatement[];
    sql: (params: P[], literal: (value: string) => string) => string | undefined;
    parse: (rows: Array<Record<string, unknown>>, params: P[]) => R[];
    /**
     * The same work for a batch sent as one message with its events (see
     * {@link AuditService}'s one-message batches): each unit's events are written for the
     * result it is `expected` to have, and `sql` (one statement, or `undefined` when the
     * batch cannot be sent so) must fail with `writ_expect` (SQLSTATE `EXPECTATION_FAILED`)
     * unless every parameter's result is the expected one. `statements` as above.
     */
    expect?: {
      statements: readonly SessionStatement[];
      sql: (params: P[], literal: (value: string) => string) => string | undefined;
      expected: (param: P) => R;
    };
  };
}

/** The chain head: the last event's `seq` and `hash`. */
interface ChainHead {
  seq: number;
  hash: string;
}

/** A batch's events, chained: per unit, all of them, their data's canonical JSON, and the new head. */
interface ChainedBatch {
  recordsPerUnit: AuditRecord[][];
  all: AuditRecord[];
  dataTexts: string[];
  head: ChainHead;
}

/**
 * One-message batches (see {@link AuditService}) stop while more than this share of the
 * attempts failed, smoothed over the last few (each attempt weighs
 * {@link ONE_MESSAGE_SMOOTHING}): three failures in a row stop them, a rare one does not.
 */
const ONE_MESSAGE_MAX_FAILURE_RATE = 0.25;
const ONE_MESSAGE_SMOOTHING = 1 / 8;
/** While they are stopped, one batch in this many is still sent as one message, to see whether it pays again. */
const ONE_MESSAGE_PROBE_EVERY = 64;

interface Unit {
  work?: AuditedWork<unknown>;
  batched?: BatchableWork<unknown, unknown>;
  events: AuditEventInput[] | ((result: unknown) => AuditEventInput[]);
  resolve: (value: { result: unknown; records: AuditRecord[] }) => void;
  reject: (error: unknown) => void;
  /** The caller's request id when the unit was queued, recorded in its events' data. */
  requestId?: string;
  /** Nobody waits for it: written with the next batch, or on its own after `laterMs` (see {@link AuditService.recordLater}). */
  later?: boolean;
}

/** Options of {@link AuditService}. */
export interface AuditServiceOptions {
  /** Most units written in one transaction (group commit). */
  maxBatch?: number;
  /**
   * Public keys that verify signed checkpoints (from the master key, or a published key file).
   * Without them, any checkpoint in the database fails verification: it cannot be trusted.
   */
  checkpointKeys?: readonly CheckpointPublicKey[];
  /**
   * Public keys of master keys dropped since (`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS`). A leaked
   * old key can still sign, so they are trusted only for what was signed before the rotation:
   * checkpoints before the first one signed by a key of {@link checkpointKeys} (and the newest
   * checkpoint must be signed by one of those, covering them), and prune markers that a later
   * marker signed by one of those follows, or whose `audit.pruned` event such a checkpoint
   * covers.
   */
  retiredCheckpointKeys?: readonly CheckpointPublicKey[];
  /** The checkpoint file outside the database that {@link AuditService.verify} also checks, if it exists. */
  checkpointFile?: string;
  /** Told the `seq` and `hash` of the events of each commit, in order (the checkpointer). */
  onAppended?: (events: ReadonlyArray<{ seq: number; hash: string }>) => void;
  /** Told of a change in how batches are written (logged as a warning). */
  onNotice?: (message: string) => void;
  /** Told whether each batch sent as one message committed, or failed an expectation and was written again (metrics). */
  onOneMessage?: (committed: boolean) => void;
  /** Told every committed batch's events and how long its commit took (metrics). */
  onCommitted?: (records: readonly AuditRecord[], seconds: number) => void;
  /**
   * The pool verification reads from (default: the service pool). A pool of its own keeps a
   * long walk from holding a connection the hot paths need.
   */
  verifyPool?: Pool;
  /**
   * Longest a unit queued with {@link AuditService.recordLater} waits for another batch to
   * join before it is written on its own (default 10 ms).
   */
  laterMs?: number;
  /**
   * The request id to record (as `data.request_id`) in the events of a unit queued now, if
   * any: the caller's `X-Request-Id`, so that an event can be matched to the caller's logs.
   */
  requestId?: () => string | undefined;
}

/** Options of {@link AuditService.verify}. */
export interface VerifyOptions {
  /** Events read per query. */
  pageSize?: number;
  /** Checkpoints kept outside the database (e.g. read from a file); default: the configured file. */
  external?: SignedCheckpoint[];
  /**
   * Resume the walk at the last signed checkpoint an earlier walk of this service verified
   * (its event must still hold the checkpointed hash), instead of at `seq` 1: the cost is the
   * events appended since, not the whole log. Every checkpoint is still checked (signature,
   * link, external file). A full walk is what detects a rewrite of older events.
   */
  incremental?: boolean;
}

const COLUMNS = 'seq, id, occurred_at, type, outcome, actor_type, actor_id, agent_id, task_id, connector_id, data, prev_hash, hash';

/**
 * Appends a batch's events and moves the chain head, prepared once per connection: the events
 * as one JSON document (`$1`, each event's `data` its canonical JSON), the new head (`$2`,
 * `$3`) and the number of events (`$4`, the head moves only if all of them were inserted).
 */
const APPEND: SessionStatement = {
  name: 'writ_audit_append_doc',
  text: `WITH appended AS (
      INSERT INTO audit_events (${COLUMNS})
      SELECT ${COLUMNS} FROM jsonb_to_recordset($1::jsonb) AS e(seq bigint, id uuid, occurred_at timestamptz, type text, outcome text, actor_type text,
             actor_id text, agent_id text, task_id text, connector_id text, data jsonb, prev_hash text, hash text)
      RETURNING 1)
    UPDATE audit_chain_head SET seq = $2::bigint, hash = $3::text WHERE id = 1 AND (SELECT count(*) FROM appended) = $4::int`,
};

/**
 * Lets the process's requests run every 128 checkpoints checked (an Ed25519 verification each, a
 * few hundred microseconds): a log has hundreds of thousands of them after a year, as the walk
 * yields between pages of events.
 */
function breathe(index: number): Promise<void> | undefined {
  return index % 128 === 127 ? new Promise((resolve) => setImmediate(resolve)) : undefined;
}

/** An optional event column as stored: null, or the text well-formed. */
const orNull = (value: string | null | undefined): string | null => (value == null ? null : wellFormed(value));

/** The {@link APPEND} document of `records` (`dataTexts`: the canonical JSON of each one's data). */
function appendDocument(records: readonly AuditRecord[], dataTexts: readonly string[]): string {
  // Each scalar as JSON. The records come from `chain`, which made their text well-formed (a lone
  // surrogate would be an escape in the JSON text, which jsonb refuses) before hashing them.
  // PostgreSQL text cannot hold NUL: refused, as a parameter holding one would be (`data` is
  // normalised without them).
  const json = (value: string | null) => {
    if (value === null) return 'null';
    if (value.includes('\u0000')) throw new Error('an audit event field holds a NUL character (0x00)');
    return JSON.stringify(value);
  };
  let document = '[';
  records.forEach((record, index) => {
    if (index > 0) document += ',';
    // `data` is already canonical JSON.
    document += `{"seq":${record.seq},"id":${json(record.id)},"occurred_at":${json(record.occurred_at)},"type":${json(record.type)},"outcome":${json(record.outcome)},"actor_type":${json(record.actor_type)},"actor_id":${json(record.actor_id)},"agent_id":${json(record.agent_id)},"task_id":${json(record.task_id)},"connector_id":${json(record.connector_id)},"data":${dataTexts[index]},"prev_hash":${json(record.prev_hash)},"hash":${json(record.hash)}}`;
  });
  return document + ']';
}

/** The {@link APPEND} arguments, as literals, of a chained batch whose document is `document`. */
function appendArguments(document: string, chained: ChainedBatch): string[] {
  return [sqlLiteral(document), String(chained.head.seq), sqlLiteral(chained.head.hash), String(chained.all.length)];
}

/**
 * Whether a connection whose statement failed still answers (a `ROLLBACK`, which also ends the
 * failed transaction). One that does not was lost, maybe after its last message committed.
 */
function answers(client: PoolClient): Promise<boolean> {
  return client.query('ROLLBACK').then(
    () => true,
    () => false,
  );
}

/**
 * What a batch's failed statement is to its caller: prepared statements found missing are
 * forgotten on the connection; a lost connection (`broken`: not to be reused) is an
 * {@link AuditUnavailableError}; `lost`: the connection no longer answers, so the batch may have
 * committed before it broke (`outcomeUnknown`).
 */
function batchFailure(client: PoolClient, error: unknown, lost = false): { error: unknown; broken: boolean } {
  if (isMissingStatement(error)) forgetPrepared(client);
  if (lost) return { error: new AuditUnavailableError(error, true), broken: true };
  return isConnectionError(error) ? { error: new AuditUnavailableError(error), broken: true } : { error, broken: false };
}

/** The units of a batch with batched work, by kind, in order. */
function batchedKinds(batch: Unit[]): Map<string, number[]> {
  const kinds = new Map<string, number[]>();
  batch.forEach((unit, index) => {
    if (!unit.batched) return;
    const indexes = kinds.get(unit.batched.kind) ?? [];
    indexes.push(index);
    kinds.set(unit.batched.kind, indexes);
  });
  return kinds;
}

/**
 * The order a batch's units did their work in, which is the order their events are chained in:
 * the chain must read as things happened. Units without work first (their events record what
 * happened before they were queued, so before this batch's work), in queue order; then the
 * batched work of each kind, the kinds `first` (run in the message that locks the chain head)
 * before the others, kind after kind in `kinds` order, and each kind's units in queue order;
 * then the other units' work, in queue order. A task end queued before a gateway call that
 * spends in the same batch runs after that spend: the spend's `gateway.call` is chained before
 * the end's `task.completed` and `token.revoked`, never after them.
 */
function executionOrder(batch: Unit[], kinds: Map<string, number[]>, first: ReadonlySet<string> = new Set()): number[] {
  const order = batch.flatMap((unit, index) => (unit.work || unit.batched ? [] : [index]));
  for (const [kind, indexes] of kinds) if (first.has(kind)) order.push(...indexes);
  for (const [kind, indexes] of kinds) if (!first.has(kind)) order.push(...indexes);
  batch.forEach((unit, index) => {
    if (unit.work && !unit.batched) order.push(index);
  });
  return order;
}

/** The batched work of a batch that can go in the message that locks the chain head, as SQL. */
function inlineWork(batch: Unit[], kinds: Map<string, number[]>, sessionStatements: boolean): Array<{ kind: string; sql: string }> {
  const inlined: Array<{ kind: string; sql: string }> = [];
  for (const [kind, indexes] of kinds) {
    const work = batch[indexes[0]].batched!;
    if (!work.inline || (work.inline.statements && !sessionStatements)) continue;
    try {
      const sql = work.inline.sql(
        indexes.map((index) => batch[index].batched!.params),
        sqlLiteral,
      );
      if (sql !== undefined) inlined.push({ kind, sql });
    } catch (error) {
      // A value that cannot be a literal: this kind's work runs with parameters instead.
      if (!(error instanceof NotALiteralError)) throw error;
    }
  }
  return inlined;
}

let isoMs = 0;
let isoText = '';

/** `new Date().toISOString()`, formatted once per millisecond (a batch's events share it). */
function isoNow(): string {
  const now = Date.now();
  if (now !== isoMs) {
    isoMs = now;
    isoText = new Date(now).toISOString();
  }
  return isoText;
}

/** An `audit_events` row (all its columns) as the record the API and verification use. */
export function toRecord(row: Record<string, unknown>): AuditRecord {
  return {
    seq: Number(row.seq),
    id: row.id as string,
    occurred_at: storedTime(row.occurred_at),
    type: row.type as string,
    outcome: row.outcome as AuditRecord['outcome'],
    actor_type: row.actor_type as AuditRecord['actor_type'],
    actor_id: (row.actor_id as string | null) ?? null,
    agent_id: (row.agent_id as string | null) ?? null,
    task_id: (row.task_id as string | null) ?? null,
    connector_id: (row.connector_id as string | null) ?? null,
    data: row.data as Record<string, unknown>,
    prev_hash: row.prev_hash as string,
    hash: row.hash as string,
  };
}

/**
 * The append-only, hash-chained audit log. Every instance of every service extends one
 * chain: a batch locks the chain head row, appends, and commits; events that arrive while a
 * batch commits are written together in the next one (group commit). A caller's promise
 * settles only after its events are durably committed, so "no event, no token" holds.
 */
export class AuditService implements AuditedTransaction<AuditEventInput> {
  private queue: Unit[] = [];
  private flushing: Promise<void> | undefined;
  /** Armed while only units queued with {@link recordLater} wait. */
  private laterTimer: NodeJS.Timeout | undefined;
  private readonly maxBatch: number;
  private readonly keyring: CheckpointKeyring;
  /** Kids of {@link AuditServiceOptions.retiredCheckpointKeys} that are not also current keys. */
  private readonly retiredKids: ReadonlySet<string>;
  /** Whether batches use statements prepared per connection (see {@link commit}). */
  private sessionStatements = true;
  /** The chain head as this service's last commit left it; undefined until one commits, and after a failure. */
  private head: ChainHead | undefined;
  /** The smoothed share of one-message batches that failed their expectations (see {@link commitInOneMessage}). */
  private oneMessageFailureRate = 0;
  /** Batches written in two round trips since the last one-message attempt, because attempts failed too often. */
  private batchesWithoutAttempt = 0;

  constructor(
    private readonly pool: Pool,
    private readonly options: AuditServiceOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 256;
    const current = options.checkpointKeys ?? [];
    const currentKids = new Set(current.map((key) => key.kid));
    const retired = (options.retiredCheckpointKeys ?? []).filter((key) => !currentKids.has(key.kid));
    this.keyring = checkpointKeyring([...current, ...retired]);
    this.retiredKids = new Set(retired.map((key) => key.kid));
  }

  /** Appends events; resolves with their records once committed. */
  async record(events: AuditEventInput | AuditEventInput[]): Promise<AuditRecord[]> {
    const list = Array.isArray(events) ? events : [events];
    return (await this.enqueue(undefined, list)).records;
  }

  /**
   * Appends events nobody waits for before going on (e.g. the outcome of a call already
   * answered): they are written with the next batch that commits anyway, or on their own
   * after at most `laterMs`, instead of taking a commit of their own at once that the next
   * caller who does wait would queue behind. Resolves with their records once committed;
   * {@link drain} writes them at once.
   */
  async recordLater(events: AuditEventInput | AuditEventInput[]): Promise<AuditRecord[]> {
    const list = Array.isArray(events) ? events : [events];
    return (await this.enqueue(undefined, list, undefined, true)).records;
  }

  /**
   * Runs `work` and appends the events it leads to in one transaction: both commit or
   * neither does. `work` may run more than once (a failed batch is retried unit by unit),
   * always in a fresh transaction.
   */
  async recordWith<T>(work: AuditedWork<T>, events: (result: T) => AuditEventInput[]): Promise<{ result: T; records: AuditRecord[] }> {
    const outcome = await this.enqueue(work, events as (result: unknown) => AuditEventInput[]);
    return outcome as { result: T; records: AuditRecord[] };
  }

  /** The audited transaction ({@link AuditedTransaction}): {@link recordWith}, resolving with the work's result. */
  async run<T>(work: TransactionWork<T>, events: (result: T) => AuditEventInput[]): Promise<T> {
    return (await this.recordWith(work, events)).result;
  }

  /**
   * Like {@link recordWith}, for work that can be batched with other units of the same kind
   * (see {@link BatchableWork}). Both the work and the events commit, or neither does.
   */
  async recordWithBatched<P, R>(work: BatchableWork<P, R>, events: (result: R) => AuditEventInput[]): Promise<{ result: R; records: AuditRecord[] }> {
    const outcome = await this.enqueue(undefined, events as (result: unknown) => AuditEventInput[], work as BatchableWork<unknown, unknown>);
    return outcome as { result: R; records: AuditRecord[] };
  }

  /** Waits until everything queued so far is written (units queued with {@link recordLater} included). */
  async drain(): Promise<void> {
    while (this.flushing || this.queue.length > 0) {
      if (!this.flushing) this.startFlush(true);
      await this.flushing;
    }
  }

  private enqueue(work: Unit['work'], events: Unit['events'], batched?: Unit['batched'], later = false): Promise<{ result: unknown; records: AuditRecord[] }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ work, batched, events, resolve, reject, requestId: this.options.requestId?.(), later });
      if (this.flushing) return;
      if (later) this.armLater();
      else this.startFlush(false);
    });
  }

  private startFlush(all: boolean): void {
    clearTimeout(this.laterTimer);
    this.laterTimer = undefined;
    this.flushing = this.flush(all);
  }

  /** Units nobody waits for, alone in the queue: written when a unit someone waits for comes, or after `laterMs`. */
  private armLater(): void {
    this.laterTimer ??= setTimeout(() => {
      this.laterTimer = undefined;
      if (!this.flushing && this.queue.length > 0) this.startFlush(true);
    }, this.options.laterMs ?? 10);
  }

  /** `all`: also units queued with {@link recordLater} when no other unit waits. */
  private async flush(all: boolean): Promise<void> {
    try {
      // Let the callers of this tick join the first batch.
      await new Promise<void>((resolve) => setImmediate(resolve));
      await this.flushQueued(all);
    } finally {
      // A unit queued after the loop's last look (while `flushing` was still set) starts the next flush.
      this.flushing = undefined;
      if (this.queue.some((unit) => !unit.later)) this.startFlush(false);
      else if (this.queue.length > 0) this.armLater();
    }
  }

  private async flushQueued(all: boolean): Promise<void> {
    while (this.queue.length > 0 && (all || this.queue.some((unit) => !unit.later))) {
      const batch = this.queue.splice(0, this.maxBatch);
      try {
        await this.commit(batch);
      } catch (error) {
        // The connection was lost, possibly after the batch committed (its answer lost): no
        // unit is at fault, and running the work again could repeat what did commit (a use
        // spent twice, a client assertion then found spent: a 401). Each unit is refused (503).
        if (batch.length === 1 || (error instanceof AuditUnavailableError && error.outcomeUnknown)) {
          for (const unit of batch) unit.reject(error);
          continue;
        }
        // One unit may have failed the batch: give each its own transaction.
        for (const unit of batch) {
          await this.commit([unit]).catch((unitError: unknown) => unit.reject(unitError));
        }
      }
    }
  }

  /**
   * Commits a batch. Where a statement prepared on this connection is missing on the server
   * (a transaction-mode pooler in front of PostgreSQL hands each transaction to any server
   * connection), session statements are given up for good in this process and the batch is
   * written again with parameters: the same statements, one round trip each.
   */
  private async commit(batch: Unit[]): Promise<void> {
    try {
      if (await this.commitInOneMessage(batch)) return;
      await this.commitOnce(batch);
    } catch (error) {
      if (!isMissingStatement(error) || !this.sessionStatements) throw error;
      this.sessionStatements = false;
      this.options.onNotice?.('a prepared statement was missing on its connection (a transaction-mode pooler?): audit batches now use parameters');
      await this.commitOnce(batch);
    }
  }

  private async commitOnce(batch: Unit[]): Promise<void> {
    const started = process.hrtime.bigint();
    const client = await this.connect();
    const release = watchCheckedOut(client);
    let failed = false;
    try {
      // One round trip: open the transaction, lock the chain head and run the batched work
      // that can be inlined (simple query protocol, one statement after the other).
      const kinds = batchedKinds(batch);
      const sessionStatements = this.sessionStatements;
      if (sessionStatements) {
        await prepareOnce(client, [APPEND, ...[...kinds.values()].flatMap((indexes) => batch[indexes[0]].batched!.inline?.statements ?? [])]);
      }
      const inlined = inlineWork(batch, kinds, sessionStatements);
      const opened = (await client.query(
        `BEGIN; SELECT seq, hash FROM audit_chain_head WHERE id = 1 FOR UPDATE${inlined.map((work) => `; ${work.sql}`).join('')}`,
      )) as unknown as Array<{ rows: Array<Record<string, unknown>> }>;
      const head = opened[1].rows[0] as { seq: string; hash: string };
      const done = new Map(inlined.map((work, position) => [work.kind, opened[2 + position].rows]));
      const results = await this.runBatchedWork(client, batch, kinds, done);
      for (const [index, unit] of batch.entries()) {
        if (!unit.batched && unit.work) results[index] = await unit.work(client);
      }
      const order = executionOrder(batch, kinds, new Set(inlined.map((work) => work.kind)));
      const chained = this.chain(batch, results, { seq: Number(head.seq), hash: head.hash }, order);
      const { all, dataTexts } = chained;
      if (all.length > 0) {
        const document = appendDocument(all, dataTexts);
        if (sessionStatements) {
          // One message appends the events, moves the chain head and commits: a round trip
          // less under the chain-head lock than a parameterised append followed by COMMIT.
          await client.query(`${executeStatement(APPEND, appendArguments(document, chained))}; COMMIT`);
        } else {
          await client.query({ name: APPEND.name, text: APPEND.text, values: [document, chained.head.seq, chained.head.hash, all.length] });
          await client.query('COMMIT');
        }
      } else {
        await client.query('COMMIT');
      }
      this.head = chained.head;
      this.settle(batch, results, chained, started);
    } catch (error) {
      this.head = undefined;
      // A connection that no longer answers may have committed the batch before it broke.
      const failure = batchFailure(client, error, !(await answers(client)));
      failed = failure.broken;
      throw failure.error;
    } finally {
      release(failed);
    }
  }

  /**
   * Writes a batch in one message, when it can: its events hashed on the chain head this
   * service last wrote (`head`) and written for the results its batched work is expected to
   * have (`BatchableWork.inline.expect`). The message locks the chain head and checks it is
   * that head (`writ_expect`), runs the work, which checks its results are the expected ones,
   * appends the events and moves the head: one implicit transaction (simple query protocol, no
   * `BEGIN`), committed at the end of the message, or rolled back whole at the first statement
   * that fails. Returns false when the batch was not written: it cannot be sent so (work of
   * another kind, no head known, statements not prepared per connection, a value that cannot
   * be a literal), or an expectation failed (another writer moved the head, a credential's
   * task ended meanwhile...). The caller then writes it the usual way, in two round trips,
   * reading the head under the lock. While more than {@link ONE_MESSAGE_MAX_FAILURE_RATE} of
   * the recent attempts failed (instances taking turns at the head), batches are written the
   * usual way but for one probe in {@link ONE_MESSAGE_PROBE_EVERY}: a wasted round trip per
   * batch would cost more than the one saved.
   */
  private async commitInOneMessage(batch: Unit[]): Promise<boolean> {
    const head = this.head;
    if (head === undefined || !this.sessionStatements) return false;
    if (this.oneMessageFailureRate > ONE_MESSAGE_MAX_FAILURE_RATE && this.batchesWithoutAttempt < ONE_MESSAGE_PROBE_EVERY - 1) {
      this.batchesWithoutAttempt += 1;
      return false;
    }
    if (batch.some((unit) => unit.work || (unit.batched && !unit.batched.inline?.expect))) return false;
    const started = process.hrtime.bigint();
    const results: unknown[] = new Array(batch.length);
    const works: string[] = [];
    const statements: SessionStatement[] = [APPEND];
    const kinds = batchedKinds(batch);
    for (const indexes of kinds.values()) {
      const expect = batch[indexes[0]].batched!.inline!.expect!;
      const params = indexes.map((index) => batch[index].batched!.params);
      let sql: string | undefined;
      try {
        sql = expect.sql(params, sqlLiteral);
      } catch (error) {
        if (!(error instanceof NotALiteralError)) throw error;
      }
      if (sql === undefined) return false;
      works.push(sql);
      statements.push(...expect.statements);
      indexes.forEach((unitIndex, position) => (results[unitIndex] = expect.expected(params[position])));
    }
    // Every kind runs in the message, one statement after the other, in `kinds` order.
    const chained = this.chain(batch, results, head, executionOrder(batch, kinds));
    if (chained.all.length === 0) return false;
    let document: string;
    try {
      document = appendDocument(chained.all, chained.dataTexts);
    } catch {
      // Refused the usual way, with the usual error.
      return false;
    }
    const client = await this.connect();
    const release = watchCheckedOut(client);
    let failed = false;
    try {
      await prepareOnce(client, statements);
      await client.query(
        [
          `SELECT writ_expect(count(*), 1, 'the chain head') FROM (SELECT 1 FROM audit_chain_head WHERE id = 1 AND seq = ${head.seq} AND hash = ${sqlLiteral(head.hash)} FOR UPDATE) h`,
          ...works,
          executeStatement(APPEND, appendArguments(document, chained)),
        ].join('; '),
      );
    } catch (error) {
      // Nothing of the message was committed (it was one transaction), unless the connection
      // broke once it had: then it no longer answers.
      this.head = undefined;
      if ((error as { code?: string }).code === EXPECTATION_FAILED) {
        this.noteOneMessage(false);
        return false;
      }
      const failure = batchFailure(client, error, !(await answers(client)));
      failed ||= failure.broken;
      throw failure.error;
    } finally {
      release(failed);
    }
    this.head = chained.head;
    this.noteOneMessage(true);
    this.settle(batch, results, chained, started);
    return true;
  }

  /** Counts a one-message attempt into the failure rate and tells the metrics. */
  private noteOneMessage(committed: boolean): void {
    this.batchesWithoutAttempt = 0;
    this.oneMessageFailureRate += ((committed ? 0 : 1) - this.oneMessageFailureRate) * ONE_MESSAGE_SMOOTHING;
    this.options.onOneMessage?.(committed);
  }

  private async connect(): Promise<PoolClient> {
    try {
      return await this.pool.connect();
    } catch (error) {
      throw new AuditUnavailableError(error);
    }
  }

  /**
   * Builds and hashes a batch's events, given each unit's result, on `head`: unit after unit in
   * `order` (the order their work ran in, see {@link executionOrder}), so that seqs follow it.
   */
  private chain(batch: Unit[], results: unknown[], head: ChainHead, order: readonly number[]): ChainedBatch {
    if (order.length !== batch.length) throw new Error(`an audit batch of ${batch.length} units was ordered as ${order.length}`);
    let seq = head.seq;
    let prevHash = head.hash;
    const recordsPerUnit: AuditRecord[][] = new Array<AuditRecord[]>(batch.length);
    const all: AuditRecord[] = [];
    // The canonical JSON of each event's data, also the jsonb text it is written as.
    const dataTexts: string[] = [];
    for (const index of order) {
      const unit = batch[index];
      const inputs = typeof unit.events === 'function' ? unit.events(results[index]) : unit.events;
      const records: AuditRecord[] = [];
      for (const input of inputs) {
        seq += 1;
        const data = normaliseEventData(unit.requestId && input.data?.request_id === undefined ? { ...input.data, request_id: unit.requestId } : input.data);
        const record: AuditRecord = {
          seq,
          // Time-ordered (UUIDv7): the `id` index is appended to, as `seq`'s is (see `newJti`).
          id: uuidv7(),
          occurred_at: isoNow(),
          // Hashed as stored: a lone surrogate is written as U+FFFD (see appendDocument).
          type: wellFormed(input.type),
          outcome: input.outcome,
          actor_type: input.actor.type,
          actor_id: orNull(input.actor.id),
          agent_id: orNull(input.agentId),
          task_id: orNull(input.taskId),
          connector_id: orNull(input.connectorId),
          data: data.value,
          prev_hash: prevHash,
          hash: '',
        };
        // Built whole, not spread from the hashed body: the copy was ~2% of a gateway call.
        record.hash = chainHashOfCanonicalData(prevHash, record, data.canonical);
        dataTexts.push(data.canonical);
        records.push(record);
        prevHash = record.hash;
      }
      recordsPerUnit[index] = records;
      all.push(...records);
    }
    return { recordsPerUnit, all, dataTexts, head: { seq, hash: prevHash } };
  }

  /** After a batch committed: resolves its units, tells the checkpointer and the metrics. */
  private settle(batch: Unit[], results: unknown[], chained: ChainedBatch, started: bigint): void {
    batch.forEach((unit, index) => unit.resolve({ result: results[index], records: chained.recordsPerUnit[index] }));
    if (chained.all.length > 0) this.options.onAppended?.(chained.all);
    this.options.onCommitted?.(chained.all, Number(process.hrtime.bigint() - started) / 1e9);
  }

  /** Runs the batchable work of a batch, one statement per kind; results by unit index. */
  /** Runs the batched work of a batch (or parses the rows of the work inlined in the locking message, `done` by kind); results by unit index. */
  private async runBatchedWork(
    client: PoolClient,
    batch: Unit[],
    kinds: Map<string, number[]>,
    done: Map<string, Array<Record<string, unknown>>>,
  ): Promise<unknown[]> {
    const results: unknown[] = new Array(batch.length);
    for (const [kind, indexes] of kinds) {
      const first = batch[indexes[0]].batched!;
      const params = indexes.map((index) => batch[index].batched!.params);
      const rows = done.get(kind);
      const out = rows ? first.inline!.parse(rows, params) : await first.run(client, params);
      if (out.length !== indexes.length) throw new Error(`batched work ${first.kind} returned ${out.length} results for ${indexes.length} units`);
      indexes.forEach((unitIndex, position) => (results[unitIndex] = out[position]));
    }
    return results;
  }

  /** One page of events, newest first unless `ascending`, after the opaque cursor. */
  async list(query: AuditQuery, page: { limit: number; after?: number; ascending?: boolean }): Promise<{ items: AuditRecord[]; nextCursor: number | null }> {
    const { where, values } = buildWhere(query);
    if (page.after !== undefined) {
      values.push(page.after);
      where.push(page.ascending ? `seq > $${values.length}` : `seq < $${values.length}`);
    }
    values.push(page.limit + 1);
    const { rows } = await this.pool.query(
      `SELECT ${COLUMNS} FROM audit_events ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
        ORDER BY seq ${page.ascending ? 'ASC' : 'DESC'} LIMIT $${values.length}`,
      values,
    );
    const items = rows.slice(0, page.limit).map(toRecord);
    return { items, nextCursor: rows.length > page.limit ? items[items.length - 1].seq : null };
  }

  /** Every event matching the query, oldest first, read in pages. */
  async *stream(query: AuditQuery, pageSize = 1000): AsyncGenerator<AuditRecord> {
    let after: number | undefined;
    for (;;) {
      const page = await this.list(query, { limit: pageSize, after, ascending: true });
      yield* page.items;
      if (page.nextCursor === null) return;
      after = page.nextCursor;
    }
  }

  /**
   * Walks the whole chain in pages: gapless sequence, each `prev_hash` the previous `hash`,
   * each `hash` recomputed, and the chain head matching the last event. Then the signed
   * checkpoints: each one in the database must carry a valid signature of a trusted key and
   * follow the one before it; each one of the external file (given, or the configured file
   * when it exists) must be signed and also be in the database; and the chain must have, at
   * every checkpoint's `seq`, the hash it signed. A rewrite of events up to the last
   * checkpoint, or a truncation below it, is therefore detected even with every later hash
   * recomputed (docs/audit.md says what is and is not detectable).
   */
  async verify(pageSizeOrOptions: number | VerifyOptions = {}): Promise<AuditVerification> {
    const options = typeof pageSizeOrOptions === 'number' ? { pageSize: pageSizeOrOptions } : pageSizeOrOptions;
    // The file first: a checkpoint reaches it only after its row committed, so every line of
    // it is in the snapshot read next.
    let external = options.external;
    let fileError: string | undefined;
    if (!external && this.options.checkpointFile) {
      try {
        external = await readCheckpointFile(this.options.checkpointFile);
      } catch (error) {
        if (!(error instanceof CheckpointFileError)) throw error;
        fileError = error.message;
      }
    }
    // One snapshot: events, head and checkpoints as of one instant, whatever is appended meanwhile.
    const client = await (this.options.verifyPool ?? this.pool).connect();
    const release = watchCheckedOut(client);
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const result = await this.verifySnapshot(
        client,
        options.pageSize ?? 1000,
        external,
        fileError,
        options.incremental ? this.lastVerifiedCheckpoint : undefined,
      );
      await client.query('COMMIT');
      return result;
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      release();
    }
  }

  /** The last signed checkpoint a valid walk of this service went through (where an incremental walk resumes). */
  private lastVerifiedCheckpoint: { seq: number; hash: string } | undefined;

  /**
   * The newest stored checkpoint whose signature, and those of every one before it, this service
   * verified (its digest covers its body and signature): see {@link checkCheckpoints}.
   */
  private signaturesVerified: { seq: number; digest: string } | undefined;

  private async verifySnapshot(
    client: PoolClient,
    pageSize: number,
    external: SignedCheckpoint[] | undefined,
    fileError: string | undefined,
    resume: { seq: number; hash: string } | undefined,
  ): Promise<AuditVerification> {
    const stored = await client.query<CheckpointRow>(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq`);
    const checkpoints = stored.rows.map(checkpointFromRow);
    if (fileError) return { valid: false, events: 0, ...this.summary(checkpoints, 0, []), reason: fileError };
    const summary = (verified: number) => this.summary(checkpoints, verified, external);
    const checked = await this.checkCheckpoints(checkpoints, external);
    if ('reason' in checked) return { valid: false, events: 0, ...summary(0), ...checked };
    const { anchors, missing } = checked;
    const anchorSeqs = [...anchors.keys()].sort((a, b) => a - b);
    const anchorBefore = (seq: number) => anchorSeqs.filter((anchor) => anchor < seq).pop() ?? 0;

    // A pruned prefix: the chain starts after the latest signed prune marker.
    const pruned = await this.checkPrunes(client, checkpoints);
    if ('reason' in pruned) return { valid: false, events: 0, ...summary(0), ...pruned };
    const start = pruned.start;
    const prunedSummary = start ? { pruned_up_to_seq: start.seq } : {};
    if (resume && start && resume.seq <= start.seq) resume = undefined;
    // Nothing before the start: no writer appends there and a prune deletes every row up to its
    // marker. A row there (seq 0 or below, or below the marker) was inserted behind Writ's back,
    // with a hash that may recompute: the walk would never read it, yet lists, exports and a
    // task's evidence show it.
    const outside = await client.query<{ seq: string }>('SELECT seq FROM audit_events WHERE seq < $1 ORDER BY seq LIMIT 1', [start ? start.seq + 1 : 1]);
    if (outside.rows[0]) {
      const seq = Number(outside.rows[0].seq);
      const from = start ? `after the signed prune marker at seq ${start.seq}` : 'at seq 1';
      return {
        valid: false,
        events: 0,
        ...summary(0),
        ...prunedSummary,
        first_invalid_seq: seq,
        reason: `event ${seq} lies before the start of the chain (${from}): not written by Writ`,
      };
    }

    let expectedSeq = start ? start.seq + 1 : 1;
    let prevHash = start ? start.hash : '0'.repeat(64);
    let events = start ? start.seq : 0;
    let lastAnchor: { seq: number; hash: string } | undefined;
    if (resume) {
      const at = await client.query<{ hash: string }>('SELECT hash FROM audit_events WHERE seq = $1', [resume.seq]);
      if (at.rows[0]?.hash !== resume.hash) {
        return {
          valid: false,
          events: 0,
          ...summary(0),
          first_invalid_seq: resume.seq,
          invalid_checkpoint_seq: resume.seq,
          reason: `the event at seq ${resume.seq}, verified earlier against its signed checkpoint, was changed or removed since`,
        };
      }
      expectedSeq = resume.seq + 1;
      prevHash = resume.hash;
      events = resume.seq;
      lastAnchor = resume;
    }
    const resumedFrom = resume?.seq;
    for (;;) {
      // `ms_exact`: events are written to the millisecond, which is all a JavaScript Date (and so
      // the hash) holds; finer digits were set behind the writer's back.
      const { rows } = await client.query<Record<string, unknown>>(
        `SELECT ${COLUMNS}, occurred_at = date_trunc('milliseconds', occurred_at) AS ms_exact FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT $2`,
        [expectedSeq, pageSize],
      );
      for (const row of rows) {
        const record = toRecord(row);
        const invalid = (first_invalid_seq: number, reason: string): AuditVerification => ({
          valid: false,
          events,
          ...summary(anchorSeqs.filter((seq) => seq < record.seq).length),
          first_invalid_seq,
          reason,
        });
        if (record.seq !== expectedSeq) return invalid(expectedSeq, `event ${expectedSeq} is missing`);
        if (row.ms_exact === false) return invalid(record.seq, 'occurred_at holds digits below the millisecond, which no event is written with');
        if (record.prev_hash !== prevHash) {
          return invalid(
            record.seq,
            start && record.seq === start.seq + 1
              ? `prev_hash does not match the hash of the signed prune marker at seq ${start.seq}`
              : 'prev_hash does not match the previous event',
          );
        }
        const { hash, prev_hash: _prev, ...body } = record;
        const recomputed = verifiedChainHash(prevHash, body);
        if (recomputed === undefined) return invalid(record.seq, 'the event content cannot be canonicalised (nested too deep): not written by Writ');
        if (recomputed !== hash) return invalid(record.seq, 'hash does not match the event content');
        const anchored = anchors.get(record.seq);
        if (anchored !== undefined && anchored !== hash) {
          const from = anchorBefore(record.seq) + 1;
          return {
            ...invalid(
              from,
              `the chain's hash at seq ${record.seq} is not the one its signed checkpoint holds: events ${from} to ${record.seq} were rewritten`,
            ),
            invalid_checkpoint_seq: record.seq,
          };
        }
        if (anchored !== undefined) lastAnchor = { seq: record.seq, hash };
        prevHash = hash;
        expectedSeq += 1;
        events += 1;
      }
      if (rows.length < pageSize) break;
      // Let requests of this process run between pages: a long walk must not starve them.
      await new Promise((resolve) => setImmediate(resolve));
    }
    const beyond = anchorSeqs.filter((seq) => seq > events);
    if (beyond.length > 0) {
      return {
        valid: false,
        events,
        ...summary(anchorSeqs.length - beyond.length),
        first_invalid_seq: events + 1,
        invalid_checkpoint_seq: beyond[beyond.length - 1],
        reason: `a signed checkpoint covers seq ${beyond[beyond.length - 1]} but the chain ends at seq ${events}: events were removed`,
      };
    }
    if (missing.length > 0) {
      return {
        valid: false,
        events,
        ...summary(anchorSeqs.length - missing.length),
        invalid_checkpoint_seq: missing[0].seq,
        reason: `the checkpoint at seq ${missing[0].seq} is in the checkpoint file but not in the database (removed)`,
      };
    }
    const head = await client.query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_chain_head WHERE id = 1');
    const headSeq = Number(head.rows[0]?.seq ?? -1);
    if (headSeq !== events || head.rows[0]?.hash !== prevHash) {
      return {
        valid: false,
        events,
        ...summary(anchorSeqs.length),
        first_invalid_seq: Math.min(headSeq, events) + 1,
        reason: `chain head (seq ${headSeq}) does not match the last event (seq ${events})`,
      };
    }
    if (lastAnchor) this.lastVerifiedCheckpoint = lastAnchor;
    return {
      valid: true,
      events,
      ...summary(anchorSeqs.length),
      ...(resumedFrom !== undefined ? { resumed_from_seq: resumedFrom } : {}),
      ...prunedSummary,
    };
  }

  /**
   * Checks the prune markers: each signed by a trusted key, following the one before it, and
   * naming a stored signed checkpoint (its `seq`, hash and digest). Returns where the chain now
   * starts (the latest marker), or the first problem. Without markers the chain starts at seq 1,
   * so a prefix deleted without one is a missing event.
   */
  private async checkPrunes(
    client: PoolClient,
    checkpoints: SignedCheckpoint[],
  ): Promise<{ start?: { seq: number; hash: string } } | { invalid_checkpoint_seq: number; reason: string }> {
    const { rows } = await client.query<PruneRow>(`SELECT ${PRUNE_COLUMNS} FROM audit_prunes ORDER BY up_to_seq`);
    const bySeq = new Map(checkpoints.map((checkpoint) => [checkpoint.seq, checkpoint]));
    const markers = rows.map(pruneMarkerFromRow);
    const vouched = await this.markersVouchedFor(client, markers, checkpoints);
    let previous: ReturnType<typeof pruneMarkerFromRow> | undefined;
    for (const [index, marker] of markers.entries()) {
      const at = marker.up_to_seq;
      if (!pruneMarkerSignatureValid(marker, this.keyring)) {
        return { invalid_checkpoint_seq: at, reason: `the prune marker at seq ${at} is not signed by a Writ checkpoint key (forged or altered)` };
      }
      if (!vouched[index]) {
        return {
          invalid_checkpoint_seq: at,
          reason: `the prune marker at seq ${at} is signed by a retired key (WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS) but no later marker or checkpoint of a current master key vouches for it (forged with an old key?)`,
        };
      }
      if (marker.prev !== (previous ? pruneMarkerDigest(previous) : null)) {
        return { invalid_checkpoint_seq: at, reason: `the prune marker at seq ${at} does not follow the prune marker before it (one was removed or inserted)` };
      }
      const checkpoint = bySeq.get(at);
      if (!checkpoint || checkpoint.hash !== marker.up_to_hash || checkpointDigest(checkpoint) !== marker.checkpoint) {
        return { invalid_checkpoint_seq: at, reason: `the prune marker at seq ${at} does not match the signed checkpoint at that seq` };
      }
      previous = marker;
    }
    return previous ? { start: { seq: previous.up_to_seq, hash: previous.up_to_hash } } : {};
  }

  /**
   * For each prune marker (in `up_to_seq` order), whether its key may sign it: a current key
   * always; a retired key only for a marker made before the rotation, which a later vouched-for
   * marker shows (its `prev` links to this one, checked in {@link checkPrunes}), or the
   * `audit.pruned` event committed with it, at or before the newest checkpoint (signed by a
   * current key, see {@link checkCheckpoints}), which the walk checks it against. A leaked old
   * key cannot add either: what it could insert is a marker and an event in the unsigned tail.
   */
  private async markersVouchedFor(
    client: PoolClient,
    markers: ReadonlyArray<{ up_to_seq: number; up_to_hash: string; kid: string }>,
    checkpoints: SignedCheckpoint[],
  ): Promise<boolean[]> {
    const vouched = new Array<boolean>(markers.length).fill(true);
    const newest = checkpoints[checkpoints.length - 1];
    let later = false;
    for (let index = markers.length - 1; index >= 0; index -= 1) {
      const marker = markers[index];
      if (this.retiredKids.has(marker.kid) && !later) {
        if (!newest || this.retiredKids.has(newest.kid)) vouched[index] = false;
        else {
          const { rows } = await client.query(
            `SELECT 1 FROM audit_events
              WHERE type = 'audit.pruned' AND seq > $1 AND seq <= $2 AND data->>'up_to_seq' = $3 AND data->>'up_to_hash' = $4
              LIMIT 1`,
            [marker.up_to_seq, newest.seq, String(marker.up_to_seq), marker.up_to_hash],
          );
          vouched[index] = rows.length > 0;
        }
      }
      later = vouched[index];
    }
    return vouched;
  }

  /**
   * Checks the checkpoints themselves: signatures, the link of each stored one to the one
   * before it, and that each external one is also stored. Returns the hash each checkpointed
   * `seq` must have, or the first problem.
   */
  private async checkCheckpoints(
    stored: SignedCheckpoint[],
    external: SignedCheckpoint[] | undefined,
  ): Promise<{ anchors: Map<number, string>; missing: SignedCheckpoint[] } | { invalid_checkpoint_seq: number; reason: string }> {
    const anchors = new Map<number, string>();
    const missing: SignedCheckpoint[] = [];
    // Signatures are checked again only past the newest checkpoint an earlier check verified, if it
    // is stored unchanged: each checkpoint's `prev` is the digest of the one before (checked for
    // every one below), so an unchanged digest there means unchanged checkpoints up to it. One
    // Ed25519 verification per checkpoint, twice with the file, held the event loop for seconds on
    // every verification once a log had a year of them.
    const known = this.signaturesVerified;
    const digests: string[] = [];
    for (const [index, checkpoint] of stored.entries()) {
      digests.push(checkpointDigest(checkpoint));
      await breathe(index);
    }
    const knownIndex = known ? stored.findIndex((checkpoint, index) => checkpoint.seq === known.seq && digests[index] === known.digest) : -1;
    let previous: SignedCheckpoint | undefined;
    for (const [index, checkpoint] of stored.entries()) {
      await breathe(index);
      if (index > knownIndex && !checkpointSignatureValid(checkpoint, this.keyring)) {
        return {
          invalid_checkpoint_seq: checkpoint.seq,
          reason: `the checkpoint at seq ${checkpoint.seq} in the database is not signed by a Writ checkpoint key (forged or altered)`,
        };
      }
      // A retired key signed only before the rotation: never after a current key's checkpoint.
      if (previous && this.retiredKids.has(checkpoint.kid) && !this.retiredKids.has(previous.kid)) {
        return {
          invalid_checkpoint_seq: checkpoint.seq,
          reason: `the checkpoint at seq ${checkpoint.seq} is signed by a retired key (WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS) after one signed by a current master key (forged with an old key?)`,
        };
      }
      if (checkpoint.prev !== (index > 0 ? digests[index - 1] : null)) {
        return {
          invalid_checkpoint_seq: checkpoint.seq,
          reason: `the checkpoint at seq ${checkpoint.seq} does not follow the checkpoint before it in the database (one was removed or inserted)`,
        };
      }
      anchors.set(checkpoint.seq, checkpoint.hash);
      previous = checkpoint;
    }
    if (previous) this.signaturesVerified = { seq: previous.seq, digest: digests[digests.length - 1] };
    const digestBySeq = new Map(stored.map((checkpoint, index) => [checkpoint.seq, digests[index]]));
    if (previous && this.retiredKids.has(previous.kid)) {
      return {
        invalid_checkpoint_seq: previous.seq,
        reason: `the newest checkpoint (seq ${previous.seq}) is signed by a retired key (WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS): it is trusted only once a checkpoint signed by a current master key follows it (signed at the next events)`,
      };
    }
    const bySeq = new Map(stored.map((checkpoint) => [checkpoint.seq, checkpoint]));
    for (const [index, checkpoint] of (external ?? []).entries()) {
      await breathe(index);
      // The same bytes as a stored checkpoint verified above: the same signature, valid.
      const stored = digestBySeq.get(checkpoint.seq) === checkpointDigest(checkpoint);
      if (!stored && !checkpointSignatureValid(checkpoint, this.keyring)) {
        return {
          invalid_checkpoint_seq: checkpoint.seq,
          reason: `the checkpoint at seq ${checkpoint.seq} in the checkpoint file is not signed by a trusted key`,
        };
      }
      const twin = bySeq.get(checkpoint.seq);
      if (!twin) {
        // Checked after the walk, which explains a removal by a truncated chain when it can.
        missing.push(checkpoint);
        anchors.set(checkpoint.seq, checkpoint.hash);
        continue;
      }
      if (twin.sig !== checkpoint.sig || twin.hash !== checkpoint.hash) {
        return {
          invalid_checkpoint_seq: checkpoint.seq,
          reason: `the checkpoint at seq ${checkpoint.seq} in the database differs from the one in the checkpoint file`,
        };
      }
    }
    return { anchors, missing };
  }

  private summary(
    stored: SignedCheckpoint[],
    verified: number,
    external: SignedCheckpoint[] | undefined,
  ): Pick<AuditVerification, 'checkpoints_verified' | 'last_checkpoint_seq' | 'external_checkpoints'> {
    return {
      checkpoints_verified: verified,
      last_checkpoint_seq: stored.length > 0 ? stored[stored.length - 1].seq : null,
      ...(external ? { external_checkpoints: external.length } : {}),
    };
  }

  /** Checkpoints, newest first, after the cursor (a `seq`). */
  async checkpoints(page: { limit: number; before?: number }): Promise<{ items: SignedCheckpoint[]; nextCursor: number | null }> {
    const { rows } = await this.pool.query<CheckpointRow>(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq < $1 ORDER BY seq DESC LIMIT $2`, [
      page.before ?? Number.MAX_SAFE_INTEGER,
      page.limit + 1,
    ]);
    const items = rows.slice(0, page.limit).map(checkpointFromRow);
    return { items, nextCursor: rows.length > page.limit ? items[items.length - 1].seq : null };
  }

  /** The events of one task, in order (its evidence). */
  async forTask(taskId: string): Promise<AuditRecord[]> {
    const { rows } = await this.pool.query(`SELECT ${COLUMNS} FROM audit_events WHERE task_id = $1 ORDER BY seq`, [taskId]);
    return rows.map(toRecord);
  }
}

function buildWhere(query: AuditQuery): { where: string[]; values: unknown[] } {
  const where: string[] = [];
  const values: unknown[] = [];
  const add = (sql: string, value: unknown) => {
    values.push(value);
    where.push(sql.replace('?', `$${values.length}`));
  };
  if (query.agentId) add('agent_id = ?', query.agentId);
  if (query.taskId) add('task_id = ?', query.taskId);
  if (query.connectorId) add('connector_id = ?', query.connectorId);
  if (query.type) add('type = ?', query.type);
  if (query.outcome) add('outcome = ?', query.outcome);
  if (query.since) add('occurred_at >= ?', query.since);
  if (query.until) add('occurred_at < ?', query.until);
  return { where, values };
}

/**
 * True for errors that mean the database is unavailable rather than a bad statement: it cannot
 * be reached, it is frozen or overloaded (no connection within the checkout deadline, a
 * statement past `statement_timeout` or `lock_timeout`, a query the client gave up on), too
 * many connections, shutting down, a session it ended (`idle_in_transaction_session_timeout`,
 * `idle_session_timeout`), a write refused because the database is read-only (a standby after a
 * failover), or the pool already closed. Each of them is answered `503` with
 * `Retry-After`, never `500`. See also {@link isTransientError}.
 */
export function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code ?? '';
  const message = error instanceof Error ? error.message : '';
  return (
    ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN'].includes(code) ||
    // 08: connection exception; 53: insufficient resources (too many connections, out of
    // memory or disk); 57P0x: admin/crash shutdown, cannot connect now, idle session timeout
    // (57P05); 57014: statement timeout (or cancel); 55P03: lock timeout; 25P03: idle in
    // transaction session timeout (the session is ended); 25006: a write refused by a database
    // that is read-only (a standby after a failover, default_transaction_read_only).
    /^(08[0-9A-Z]{3}|53[0-9A-Z]{3}|57P0[1-5]|57014|55P03|25P03|25006)$/.test(code) ||
    /Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|not queryable|Cannot use a pool after calling end|Client was closed/i.test(
      message,
    )
  );
}

/**
 * True for a transaction PostgreSQL aborted because of concurrent ones: a serialization failure
 * (`40001`) or a deadlock (`40P01`). Nothing was written and the connection is sound: the same
 * request may succeed when retried, so it is answered `503` with `Retry-After`, never `500`.
 * Not retried automatically: the work may have had effects outside the transaction.
 */
export function isTransientError(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code ?? '';
  return code === '40001' || code === '40P01';
}
