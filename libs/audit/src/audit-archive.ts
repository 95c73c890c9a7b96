import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Pool } from 'pg';
import { auditRecordLine, parseRecordLine } from './audit-export';
import { verifiedChainHash } from './audit-hash';
import {
  checkpointDigest,
  CheckpointKeyring,
  checkpointKeyring,
  CheckpointPublicKey,
  checkpointSignatureValid,
  CheckpointSigner,
  parseCheckpointLines,
  parsePublicKeys,
  SignedCheckpoint,
} from './audit-checkpoint';
import { appendCheckpointLine, CHECKPOINT_COLUMNS, checkCheckpointPath, checkpointFromRow, CheckpointRow } from './audit-checkpointer';
import {
  isPruneMarker,
  PRUNE_COLUMNS,
  pruneMarkerDigest,
  pruneMarkerFromRow,
  PruneRow,
  pruneMarkerSignatureValid,
  signPruneMarker,
  SignedPruneMarker,
} from './audit-prune';
import { AuditService, toRecord } from './audit.service';

const GENESIS = '0'.repeat(64);
const EVENT_COLUMNS = 'seq, id, occurred_at, type, outcome, actor_type, actor_id, agent_id, task_id, connector_id, data, prev_hash, hash';

/** The files of an archive directory. */
export const ARCHIVE_FILES = {
  events: 'events.jsonl',
  checkpoints: 'checkpoints.jsonl',
  publicKey: 'public-key.json',
  manifest: 'manifest.json',
  marker: 'prune-marker.json',
} as const;

/** What `manifest.json` of an archive says: the segment and where it starts. */
export interface ArchiveManifest {
  v: 1;
  /** First and last `seq` exported. */
  from_seq: number;
  up_to_seq: number;
  /** The `prev_hash` of the first event: 64 zeros, or the previous marker's `up_to_hash`. */
  start_hash: string;
  /** The signed marker of the prune before this one (where `start_hash` comes from), if any. */
  previous_marker: SignedPruneMarker | null;
  /** SHA-256 (hex) of `events.jsonl`. */
  events_sha256: string;
  events: number;
}

/** Thrown when an archive or prune cannot or must not go on; nothing was deleted. */
export class AuditArchiveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditArchiveError';
  }
}

/** Where to cut: keep events from this `seq` on, or those that occurred at or after this instant. */
export type ArchiveCut = { seq: number } | { time: Date };

/** Options of {@link archiveAndPrune}. */
export interface ArchiveOptions {
  /** A pool connected as the tables' owner (never the services' login). */
  pool: Pool;
  /** The checkpoint key (from the master key): signs the prune marker. */
  signer: CheckpointSigner;
  /** Further public keys that verify older checkpoints (after a master key change). */
  extraKeys?: readonly CheckpointPublicKey[];
  cut: ArchiveCut;
  /** The directory under which the archive directory is created. */
  outDir: string;
  /** Who runs it, recorded in the marker and the `audit.pruned` event. */
  actor: string;
  /** The checkpoint file the marker is appended to, if any. */
  checkpointFile?: string;
}

/** What {@link archiveAndPrune} did. */
export interface ArchiveResult {
  /** False when no whole checkpointed segment lies before the cut: nothing exported or deleted. */
  pruned: boolean;
  reason?: string;
  archive?: string;
  from_seq?: number;
  up_to_seq?: number;
  events?: number;
  exported_sha256?: string;
  marker?: SignedPruneMarker;
}

/** What {@link verifyArchive} found. */
export interface ArchiveVerification {
  valid: boolean;
  events: number;
  from_seq?: number;
  up_to_seq?: number;
  checkpoints_verified: number;
  marker_verified: boolean;
  first_invalid_seq?: number;
  reason?: string;
}

async function writeSynced(file: string, text: string): Promise<void> {
  const handle = await open(file, 'wx', 0o640);
  try {
    await handle.write(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Archives and prunes the oldest whole checkpointed segment of the audit chain: every event
 * after the previous prune (or from seq 1) up to the last signed checkpoint at or before the
 * cut. Exports them (JSON lines) with the checkpoints that cover them and the public key,
 * verifies the export as written to disk, then in one transaction (holding the chain head)
 * records a prune marker signed with the checkpoint key, deletes the exported events (the
 * trigger allows only that, only to the owner) and appends an `audit.pruned` event.
 * Events after that checkpoint are never touched.
 */
export async function archiveAndPrune(options: ArchiveOptions): Promise<ArchiveResult> {
  const { pool, signer } = options;
  // Refused before anything is pruned: the marker could not be recorded there afterwards.
  if (options.checkpointFile) await checkCheckpointPath(options.checkpointFile);
  const keyring = checkpointKeyring([signer.publicJwk, ...(options.extraKeys ?? []).filter((key) => key.kid !== signer.kid)]);
  const last = await pool.query<PruneRow>(`SELECT ${PRUNE_COLUMNS} FROM audit_prunes ORDER BY up_to_seq DESC LIMIT 1`);
  const previous = last.rows[0] ? pruneMarkerFromRow(last.rows[0]) : null;
  if (previous && !pruneMarkerSignatureValid(previous, keyring)) {
    throw new AuditArchiveError(`the latest prune marker (seq ${previous.up_to_seq}) is not signed by a trusted key: run npm run audit:verify`);
  }
  const startSeq = previous?.up_to_seq ?? 0;
  const startHash = previous?.up_to_hash ?? GENESIS;

  let cutSeq: number;
  if ('seq' in options.cut) {
    cutSeq = options.cut.seq - 1;
  } else {
    const { rows } = await pool.query<{ seq: string | null }>('SELECT max(seq) AS seq FROM audit_events WHERE occurred_at < $1', [options.cut.time]);
    cutSeq = Number(rows[0]?.seq ?? 0);
  }
  const covering = await pool.query<CheckpointRow>(
    `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1`,
    [startSeq, cutSeq],
  );
  if (covering.rows.length === 0) {
    return { pruned: false, reason: `no signed checkpoint after seq ${startSeq} at or before seq ${cutSeq}: nothing to prune` };
  }
  const checkpoint = checkpointFromRow(covering.rows[0]);
  const upTo = checkpoint.seq;
  const { rows: checkpointRows } = await pool.query<CheckpointRow>(
    `SELECT ${CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq`,
    [startSeq, upTo],
  );
  const checkpoints = checkpointRows.map(checkpointFromRow);

  // Export.
  const archive = join(options.outDir, `writ-audit-${String(startSeq + 1).padStart(12, '0')}-${String(upTo).padStart(12, '0')}`);
  if (existsSync(archive)) throw new AuditArchiveError(`the archive directory already exists: ${archive}`);
  await mkdir(options.outDir, { recursive: true, mode: 0o700 });
  const partial = `${archive}.partial`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { mode: 0o700 });
  const digest = createHash('sha256');
  const handle = await open(join(partial, ARCHIVE_FILES.events), 'wx', 0o640);
  let count = 0;
  try {
    for (let after = startSeq; after < upTo;) {
      const { rows } = await pool.query<Record<string, unknown>>(
        `SELECT ${EVENT_COLUMNS} FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT 1000`,
        [after, upTo],
      );
      if (rows.length === 0) break;
      const text = rows.map((row) => auditRecordLine(toRecord(row)) + '\n').join('');
      digest.update(text, 'utf8');
      await handle.write(text);
      count += rows.length;
      after = Number(rows[rows.length - 1].seq);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  const exportedSha256 = digest.digest('hex');
  const manifest: ArchiveManifest = {
    v: 1,
    from_seq: startSeq + 1,
    up_to_seq: upTo,
    start_hash: startHash,
    previous_marker: previous,
    events_sha256: exportedSha256,
    events: count,
  };
  await writeSynced(join(partial, ARCHIVE_FILES.checkpoints), checkpoints.map((c) => JSON.stringify(c) + '\n').join(''));
  await writeSynced(join(partial, ARCHIVE_FILES.publicKey), JSON.stringify({ keys: [signer.publicJwk, ...(options.extraKeys ?? [])] }, null, 2) + '\n');
  await writeSynced(join(partial, ARCHIVE_FILES.manifest), JSON.stringify(manifest, null, 2) + '\n');

  // Verify what is on disk before anything is deleted.
  const check = await verifyArchive(partial, keyring);
  if (!check.valid) throw new AuditArchiveError(`the export does not verify, nothing was deleted: ${check.reason}`);

  // One transaction, the chain head locked: marker, deletion, and the event recording it.
  const audit = new AuditService(pool, { maxBatch: 1 });
  const { result: marker } = await audit.recordWith(
    async (client) => {
      const now = await client.query<{ up_to_seq: string | null }>('SELECT max(up_to_seq) AS up_to_seq FROM audit_prunes');
      if (Number(now.rows[0]?.up_to_seq ?? 0) !== startSeq) throw new AuditArchiveError('another prune ran meanwhile; nothing was deleted');
      const at = await client.query<{ hash: string }>('SELECT hash FROM audit_events WHERE seq = $1', [upTo]);
      if (at.rows[0]?.hash !== checkpoint.hash)
        throw new AuditArchiveError(`the event at seq ${upTo} no longer holds its checkpointed hash; nothing was deleted`);
      const signed = signPruneMarker(
        {
          up_to_seq: upTo,
          up_to_hash: checkpoint.hash,
          checkpoint: checkpointDigest(checkpoint),
          exported_sha256: exportedSha256,
          events: count,
          prev: previous ? pruneMarkerDigest(previous) : null,
          time: new Date().toISOString(),
          actor: options.actor,
        },
        signer,
      );
      await client.query(`INSERT INTO audit_prunes (${PRUNE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, [
        signed.up_to_seq,
        signed.up_to_hash,
        signed.checkpoint,
        signed.exported_sha256,
        signed.events,
        signed.prev,
        signed.time,
        signed.actor,
        signed.kid,
        signed.sig,
      ]);
      const deleted = await client.query('DELETE FROM audit_events WHERE seq > $1 AND seq <= $2', [startSeq, upTo]);
      if (deleted.rowCount !== count) throw new AuditArchiveError(`deleted ${deleted.rowCount} events where ${count} were exported; rolled back`);
      return signed;
    },
    (signed) => [
      {
        type: 'audit.pruned',
        outcome: 'success',
        actor: { type: 'system', id: options.actor },
        data: {
          from_seq: startSeq + 1,
          up_to_seq: signed.up_to_seq,
          up_to_hash: signed.up_to_hash,
          events: signed.events,
          exported_sha256: signed.exported_sha256,
          archive: archive.split(/[\\/]/).pop(),
          kid: signed.kid,
        },
      },
    ],
  );
  // Named as final only once pruned: a `.partial` directory is an export that was not pruned.
  await writeSynced(join(partial, ARCHIVE_FILES.marker), JSON.stringify(marker, null, 2) + '\n');
  await rename(partial, archive);
  if (options.checkpointFile) await appendCheckpointLine(options.checkpointFile, JSON.stringify(marker));
  return { pruned: true, archive, from_seq: startSeq + 1, up_to_seq: upTo, events: count, exported_sha256: exportedSha256, marker };
}

/**
 * Verifies an archive directory offline: the SHA-256 of `events.jsonl` against the manifest
 * (and the prune marker, when present), the chain of its events from `start_hash` (each
 * `prev_hash`, each recomputed `hash`, gapless `seq`), every checkpoint's signature and hash
 * at its `seq`, a checkpoint at the last event, the previous marker's signature (where the
 * segment starts) and the prune marker's signature and checkpoint.
 */
export async function verifyArchive(dir: string, keyring: CheckpointKeyring): Promise<ArchiveVerification> {
  const eventsFile = join(dir, ARCHIVE_FILES.events);
  let manifest: ArchiveManifest;
  let sha256: string;
  let checkpoints: SignedCheckpoint[];
  try {
    manifest = JSON.parse(await readFile(join(dir, ARCHIVE_FILES.manifest), 'utf8')) as ArchiveManifest;
    checkpoints = parseCheckpointLines(await readFile(join(dir, ARCHIVE_FILES.checkpoints), 'utf8'));
    // Streamed, here and in the walk below: a month of events is larger than a string can be.
    const digest = createHash('sha256');
    for await (const chunk of createReadStream(eventsFile)) digest.update(chunk as Buffer);
    sha256 = digest.digest('hex');
  } catch (error) {
    return { valid: false, events: 0, checkpoints_verified: 0, marker_verified: false, reason: `unreadable archive: ${(error as Error).message}` };
  }
  const fail = (reason: string, extra: Partial<ArchiveVerification> = {}): ArchiveVerification => ({
    valid: false,
    events: 0,
    checkpoints_verified: 0,
    marker_verified: false,
    from_seq: manifest.from_seq,
    up_to_seq: manifest.up_to_seq,
    reason,
    ...extra,
  });
  if (sha256 !== manifest.events_sha256) return fail('events.jsonl does not have the SHA-256 of the manifest');
  const previous = manifest.previous_marker;
  if (previous) {
    if (!isPruneMarker(previous) || !pruneMarkerSignatureValid(previous, keyring)) return fail('the previous prune marker is not signed by a trusted key');
    if (previous.up_to_seq + 1 !== manifest.from_seq || previous.up_to_hash !== manifest.start_hash)
      return fail('the segment does not start at the previous prune marker');
  } else if (manifest.from_seq !== 1 || manifest.start_hash !== GENESIS) {
    return fail('a segment that does not start at seq 1 needs the signed marker of the prune before it');
  }
  const anchors = new Map<number, SignedCheckpoint>();
  for (const checkpoint of checkpoints) {
    if (!checkpointSignatureValid(checkpoint, keyring)) return fail(`the checkpoint at seq ${checkpoint.seq} is not signed by a trusted key`);
    anchors.set(checkpoint.seq, checkpoint);
  }
  let prevHash = manifest.start_hash;
  let expected = manifest.from_seq;
  let verified = 0;
  let events = 0;
  const step = (line: string): ArchiveVerification | undefined => {
    const invalid = (reason: string) => fail(reason, { events: expected - manifest.from_seq, first_invalid_seq: expected, checkpoints_verified: verified });
    // As written, byte for byte: a member the hash does not cover, or one given twice (which
    // JSON readers resolve differently), is refused even when the marker is missing.
    const record = parseRecordLine(line);
    if (typeof record === 'string') return invalid(`the line of event ${expected} ${record}`);
    if (record.seq !== expected) return invalid(`event ${expected} is missing`);
    if (record.prev_hash !== prevHash) return invalid('prev_hash does not match the previous event');
    const { hash, prev_hash: _prev, ...body } = record;
    const recomputed = verifiedChainHash(prevHash, body);
    if (recomputed === undefined) return invalid('the event content cannot be canonicalised (nested too deep): not written by Writ');
    if (recomputed !== hash) return invalid('hash does not match the event content');
    const anchor = anchors.get(record.seq);
    if (anchor && anchor.hash !== hash) return invalid(`the hash at seq ${record.seq} is not the one its signed checkpoint holds`);
    if (anchor) verified += 1;
    prevHash = hash;
    expected += 1;
    events += 1;
    return undefined;
  };
  let rest = '';
  try {
    for await (const chunk of createReadStream(eventsFile, { encoding: 'utf8', highWaterMark: 1 << 20 })) {
      const lines = (rest + (chunk as string)).split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        const invalid = step(line);
        if (invalid) return invalid;
      }
    }
  } catch (error) {
    return fail(`unreadable archive: ${(error as Error).message}`);
  }
  if (rest !== '') return fail('events.jsonl does not end with a complete line', { events, checkpoints_verified: verified });
  const end = anchors.get(manifest.up_to_seq);
  if (expected - 1 !== manifest.up_to_seq || !end || end.hash !== prevHash) {
    return fail(`the events do not end at the signed checkpoint at seq ${manifest.up_to_seq}`, { events, checkpoints_verified: verified });
  }
  let markerVerified = false;
  if (existsSync(join(dir, ARCHIVE_FILES.marker))) {
    let marker: unknown;
    try {
      marker = JSON.parse(await readFile(join(dir, ARCHIVE_FILES.marker), 'utf8'));
    } catch {
      return fail('the prune marker file is not JSON', { events });
    }
    if (!isPruneMarker(marker) || !pruneMarkerSignatureValid(marker, keyring)) return fail('the prune marker is not signed by a trusted key', { events });
    if (
      marker.up_to_seq !== manifest.up_to_seq ||
      marker.up_to_hash !== prevHash ||
      marker.exported_sha256 !== sha256 ||
      marker.checkpoint !== checkpointDigest(end)
    ) {
      return fail('the prune marker does not match the archive', { events });
    }
    markerVerified = true;
  }
  return { valid: true, events, from_seq: manifest.from_seq, up_to_seq: manifest.up_to_seq, checkpoints_verified: verified, marker_verified: markerVerified };
}

/** The public keys an archive carries (`public-key.json`); trust them only as much as the archive. */
export async function archivePublicKeys(dir: string): Promise<CheckpointPublicKey[]> {
  return parsePublicKeys(await readFile(join(dir, ARCHIVE_FILES.publicKey), 'utf8'));
}
