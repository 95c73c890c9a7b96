import { randomBytes } from 'node:crypto';
import { constants, existsSync, type Stats } from 'node:fs';
import { lstat, mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import type { Pool, PoolClient } from 'pg';
import { watchCheckedOut } from '@writ/database';
import {
  checkpointDigest,
  CheckpointPublicKey,
  CheckpointSigner,
  parseCheckpointLines,
  parsePublicKeys,
  signCheckpoint,
  SignedCheckpoint,
} from './audit-checkpoint';
import { storedTime } from './audit-time';

/** Key of the advisory lock under which one instance at a time signs a checkpoint. */
const CHECKPOINT_LOCK = 7_311_044;

/** A row of `audit_checkpoints`. */
export interface CheckpointRow {
  seq: string;
  hash: string;
  prev: string | null;
  signed_at: Date;
  kid: string;
  signature: string;
}

/** A stored row as the signed checkpoint it records. */
export function checkpointFromRow(row: CheckpointRow): SignedCheckpoint {
  return { v: 1, seq: Number(row.seq), hash: row.hash, prev: row.prev, time: storedTime(row.signed_at), kid: row.kid, sig: row.signature };
}

/** The columns of `audit_checkpoints`, in {@link CheckpointRow} order. */
export const CHECKPOINT_COLUMNS = 'seq, hash, prev, signed_at, kid, signature';

/** Where the public key of a checkpoint file is written: beside it, `<name>.public-key.json`. */
export function publicKeyFileFor(checkpointFile: string): string {
  return join(dirname(checkpointFile), `${basename(checkpointFile, extname(checkpointFile))}.public-key.json`);
}

/** Reads a checkpoint file (JSON lines); `undefined` when it does not exist. */
export async function readCheckpointFile(file: string): Promise<SignedCheckpoint[] | undefined> {
  if (!existsSync(file)) return undefined;
  return parseCheckpointLines(await readFile(file, 'utf8'));
}

/** Options of {@link AuditCheckpointer}. */
export interface AuditCheckpointerOptions {
  /** A checkpoint once this many events were appended since the last one. */
  every: number;
  /** And at least this often (ms) while events keep coming. */
  intervalMs: number;
  /** The JSON-lines sink outside the database; unset: database only. */
  file?: string;
  /** Receives failures (a checkpoint that could not be written is retried at the next trigger). */
  onError?: (error: unknown) => void;
  /** Told when an event this instance wrote was found altered or removed in the database. */
  onAltered?: (event: { seq: number; recorded: boolean }) => void;
}

/**
 * Signs the audit chain head every `every` events or `intervalMs`, whichever comes first,
 * and at {@link stop}. A checkpoint is inserted into `audit_checkpoints` by one instance at a
 * time (transaction advisory lock; an instance that does not get it leaves the work to the
 * one that has it) and, once committed, appended to the external file and fsynced. Failures
 * never touch the request path: they are reported and retried at the next trigger.
 */
export class AuditCheckpointer {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SignedCheckpoint | undefined> | undefined;
  private lastSeq = 0;
  private stopped = false;
  /** The newest event this instance appended (see {@link status}). */
  private newestSeq = 0;
  private failures = 0;
  private lastSuccessMs: number | undefined;
  /** Hashes of events this instance appended, until a checkpoint covers them (see {@link checkOwnEvents}). */
  private readonly own = new Map<number, string>();

  constructor(
    private readonly pool: Pool,
    private readonly signer: CheckpointSigner,
    private readonly options: AuditCheckpointerOptions,
  ) {}

  /**
   * For the metrics: how many of the events this instance appended no signed checkpoint covers
   * yet (the tail a database administrator could rewrite unseen, see docs/audit.md), how many
   * checkpoint attempts failed, and when one last succeeded (signed, or found nothing to sign).
   */
  status(): { unsignedEvents: number; failures: number; lastSuccessMs: number | undefined } {
    return { unsignedEvents: Math.max(0, this.newestSeq - this.lastSeq), failures: this.failures, lastSuccessMs: this.lastSuccessMs };
  }

  /** The public key that verifies this instance's checkpoints. */
  get publicKey(): CheckpointPublicKey {
    return this.signer.publicJwk;
  }

  /** Publishes the public key beside the file, learns the last checkpoint, starts the timer. */
  async start(): Promise<void> {
    if (this.options.file) await checkCheckpointPath(this.options.file);
    if (this.options.file) await writePublicKeyFile(publicKeyFileFor(this.options.file), this.signer.publicJwk);
    const { rows } = await this.pool.query<{ seq: string | null }>('SELECT max(seq) AS seq FROM audit_checkpoints');
    this.lastSeq = Number(rows[0]?.seq ?? 0);
    this.timer = setInterval(() => void this.trigger(), this.options.intervalMs);
    this.timer.unref();
  }

  /**
   * Told the events of each commit (in order): remembers their hashes, and checkpoints when
   * `every` events have passed since the last checkpoint.
   */
  noteAppended(events: ReadonlyArray<{ seq: number; hash: string }>): void {
    if (events.length === 0) return;
    for (const event of events) this.own.set(event.seq, event.hash);
    // Bounded: normally a checkpoint covers them long before (every `every` events).
    const limit = this.options.every * 2 + 1000;
    if (this.own.size > limit) {
      for (const seq of this.own.keys()) {
        if (this.own.size <= limit) break;
        this.own.delete(seq);
      }
    }
    const headSeq = events[events.length - 1].seq;
    this.newestSeq = Math.max(this.newestSeq, headSeq);
    if (!this.stopped && headSeq - this.lastSeq >= this.options.every) void this.trigger();
  }

  /** Runs one checkpoint unless one is running already; never rejects. */
  trigger(): Promise<SignedCheckpoint | undefined> {
    if (this.running) return this.running;
    this.running = this.checkpoint()
      .then((checkpoint) => {
        this.lastSuccessMs = Date.now();
        return checkpoint;
      })
      .catch((error: unknown) => {
        this.failures += 1;
        this.options.onError?.(error);
        return undefined;
      })
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  /**
   * Signs the current chain head if it moved past the last checkpoint. Returns the new
   * checkpoint, or `undefined` when there was nothing to sign or another instance was signing.
   */
  async checkpoint(): Promise<SignedCheckpoint | undefined> {
    const client = await this.pool.connect();
    const release = watchCheckedOut(client);
    let checkpoint: SignedCheckpoint | undefined;
    let altered: { seq: number; hash: string } | undefined;
    let failed = false;
    try {
      await client.query('BEGIN');
      altered = await this.checkOwnEvents(client);
      const locked = !altered && (await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1) AS locked', [CHECKPOINT_LOCK])).rows[0].locked;
      if (locked) {
        const head = await client.query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_chain_head WHERE id = 1');
        const last = await client.query<CheckpointRow>(`SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`);
        const previous = last.rows[0] ? checkpointFromRow(last.rows[0]) : undefined;
        const headSeq = Number(head.rows[0].seq);
        this.lastSeq = Math.max(this.lastSeq, previous?.seq ?? 0);
        if (headSeq > (previous?.seq ?? 0)) {
          checkpoint = signCheckpoint(
            { seq: headSeq, hash: head.rows[0].hash, prev: previous ? checkpointDigest(previous) : null, time: new Date().toISOString() },
            this.signer,
          );
          await client.query(`INSERT INTO audit_checkpoints (${CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING`, [
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.prev,
            checkpoint.time,
            checkpoint.kid,
            checkpoint.sig,
          ]);
        }
      } else if (!altered) {
        // Another instance signs: learn how far, so that this one's unsigned count is right.
        const last = await client.query<{ seq: string | null }>('SELECT max(seq) AS seq FROM audit_checkpoints');
        this.lastSeq = Math.max(this.lastSeq, Number(last.rows[0]?.seq ?? 0));
      }
      await client.query('COMMIT');
    } catch (error) {
      failed = true;
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      release(failed);
    }
    if (altered) await this.reportAltered(altered);
    if (checkpoint) {
      this.lastSeq = checkpoint.seq;
      if (this.options.file) await appendCheckpointLine(this.options.file, JSON.stringify(checkpoint));
    }
    return checkpoint;
  }

  /**
   * Compares the events this instance appended since the last checkpoint with the stored ones.
   * The chain alone cannot tell a consistent rewrite of events after the last checkpoint, and
   * the next checkpoint would sign it; but this instance knows what it wrote. Returns the first
   * event that differs (or is gone); forgets the events a checkpoint now covers.
   */
  private async checkOwnEvents(client: PoolClient): Promise<{ seq: number; hash: string } | undefined> {
    if (this.own.size === 0) return undefined;
    // What this instance wrote, as of now. The map moves while the query below runs: events are
    // noted, and past its bound the oldest are dropped. An entry dropped meanwhile is not an
    // event gone from the database (that misreading signed hash-less "altered" records).
    const mine = [...this.own].sort((a, b) => a[0] - b[0]);
    // One statement, so one snapshot: a prune commits its marker and its deletion together, and
    // events it removed are never read as missing beside a marker not yet seen.
    const { rows } = await client.query<{ seq: string; hash: string | null; covered: string | null; pruned: string | null }>(
      `SELECT s.seq, e.hash, (SELECT max(seq) FROM audit_checkpoints) AS covered, (SELECT max(up_to_seq) FROM audit_prunes) AS pruned
         FROM unnest($1::bigint[]) AS s(seq) LEFT JOIN audit_events e ON e.seq = s.seq`,
      [mine.map(([seq]) => seq)],
    );
    // Events archived and pruned under a signed marker (docs/operations.md#retention) are gone on purpose.
    const prunedSeq = Number(rows[0]?.pruned ?? 0);
    const coveredSeq = Number(rows[0]?.covered ?? 0);
    const stored = new Map(rows.map((row) => [Number(row.seq), row.hash]));
    for (const [seq, hash] of mine) {
      if (seq > prunedSeq && stored.get(seq) !== hash) return { seq, hash };
    }
    for (const [seq] of mine) if (seq <= coveredSeq || seq <= prunedSeq) this.own.delete(seq);
    return undefined;
  }

  /**
   * An event this instance wrote was altered or removed: signs what it was (`prev` null: a
   * statement, not a link of the database's sequence), appends it to the file, where
   * verification finds it, and reports it. Later checkpoints sign what is stored, so that
   * events written from now on are protected; the record in the file keeps the chain invalid.
   */
  private async reportAltered(event: { seq: number; hash: string }): Promise<void> {
    // One record is enough to fail verification; the checkpoints go on over what is stored.
    this.own.clear();
    const statement = signCheckpoint({ seq: event.seq, hash: event.hash, prev: null, time: new Date().toISOString() }, this.signer);
    if (this.options.file) await appendCheckpointLine(this.options.file, JSON.stringify(statement));
    this.options.onAltered?.({ seq: event.seq, recorded: this.options.file !== undefined });
  }

  /** Stops the timer and signs a last checkpoint of what this instance wrote. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.running) await this.running;
    await this.trigger();
  }
}

/**
 * Refuses a checkpoint file that another local user could rewrite, truncate or swap (its lines are
 * the evidence that outlives a database superuser's rewrite), or that is a symbolic link (appended
 * to through it, the lines would land in whatever file it names, with this process's rights): a
 * file or folder writable by group or others (a folder with the sticky bit, such as /tmp, is
 * fine: others cannot rename or remove the file in it), a file owned by another user, anything
 * but a regular file.
 */
export async function checkCheckpointPath(file: string): Promise<void> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const folder = await stat(dir);
  if ((folder.mode & 0o022) !== 0 && (folder.mode & 0o1000) === 0) {
    throw new Error(`the checkpoint file's folder ${dir} is writable by other users (mode ${(folder.mode & 0o777).toString(8)}): chmod go-w ${dir}`);
  }
  const entry = await lstat(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (entry) checkCheckpointFile(file, entry);
}

function checkCheckpointFile(file: string, info: Stats): void {
  if (info.isSymbolicLink()) throw new Error(`the checkpoint file ${file} is a symbolic link: give WRIT_AUDIT_CHECKPOINT_FILE the real path`);
  if (!info.isFile()) throw new Error(`the checkpoint file ${file} is not a regular file`);
  const uid = typeof process.geteuid === 'function' ? process.geteuid() : undefined;
  if (uid !== undefined && info.uid !== uid) throw new Error(`the checkpoint file ${file} is owned by another user (uid ${info.uid})`);
  if ((info.mode & 0o022) !== 0) {
    throw new Error(`the checkpoint file ${file} is writable by other users (mode ${(info.mode & 0o777).toString(8)}): chmod go-w ${file}`);
  }
}

/** Appends one line to a checkpoint file and forces it to disk before returning (see {@link checkCheckpointPath}). */
export async function appendCheckpointLine(file: string, line: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  // Never through a symbolic link planted at its name; checked again on the opened file.
  const handle = await open(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o640).catch(
    (error: NodeJS.ErrnoException) => {
      if (error.code === 'ELOOP') throw new Error(`the checkpoint file ${file} is a symbolic link: give WRIT_AUDIT_CHECKPOINT_FILE the real path`);
      throw error;
    },
  );
  try {
    const info = await handle.stat();
    checkCheckpointFile(file, info);
    await handle.write(line + '\n');
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

/** Writes (or adds to) the JWKS of checkpoint keys beside the checkpoint file. */
async function writePublicKeyFile(file: string, key: CheckpointPublicKey): Promise<void> {
  let keys: CheckpointPublicKey[] = [];
  if (existsSync(file)) {
    try {
      keys = parsePublicKeys(await readFile(file, 'utf8'));
    } catch {
      keys = [];
    }
  }
  if (keys.some((known) => known.kid === key.kid)) return;
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  // Unique per call: several runtimes of one process may publish at the same moment.
  const temporary = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    await handle.writeFile(JSON.stringify({ keys: [...keys, key] }, null, 2) + '\n');
  } finally {
    await handle.close();
  }
  await rename(temporary, file);
}
