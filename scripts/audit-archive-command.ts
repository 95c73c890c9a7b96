import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Pool } from 'pg';
import { ArchiveCut, archiveAndPrune, ArchiveResult, CheckpointPublicKey, parsePublicKeys, publicKeyFileFor } from '@writ/audit';
import type { WritConfig } from '@writ/config';
import { EmbeddedDatabase, readPrivateFile, startEmbeddedPostgres } from '@writ/database';
import { MasterKey } from '@writ/keys';

/** What `npm run audit:archive` prints and how it exits. */
export interface AuditArchiveOutcome {
  /** 0: pruned, or nothing to prune; 2: refused or failed (nothing deleted unless `result` says so). */
  code: 0 | 2;
  result?: ArchiveResult;
  error?: string;
}

class UsageError extends Error {}

const USAGE = 'usage: npm run audit:archive -- --before <seq|ISO date> --out <dir> [--actor NAME]';

interface ArchiveArgs {
  cut: ArchiveCut;
  out: string;
  actor: string;
}

function parseArgs(args: string[], cwd: string): ArchiveArgs {
  let cut: ArchiveCut | undefined;
  let out: string | undefined;
  let actor = 'cli';
  for (let i = 0; i < args.length; i += 2) {
    const [name, value] = [args[i], args[i + 1]];
    if (value === undefined || value.startsWith('--')) throw new UsageError(`${name} needs a value; ${USAGE}`);
    if (name === '--before') {
      if (/^[1-9][0-9]{0,15}$/.test(value)) cut = { seq: Number(value) };
      else if (/^\d{4}-\d{2}-\d{2}/.test(value) && !Number.isNaN(Date.parse(value))) cut = { time: new Date(value) };
      else throw new UsageError(`--before must be a seq (a positive integer) or an ISO 8601 date, not ${JSON.stringify(value)}`);
    } else if (name === '--out') {
      out = resolve(cwd, value);
    } else if (name === '--actor') {
      if (!/^[\w.@-]{1,64}$/.test(value)) throw new UsageError('--actor must be 1 to 64 letters, digits, ".", "@", "_" or "-"');
      actor = value;
    } else {
      throw new UsageError(`unexpected argument ${JSON.stringify(name)}; ${USAGE}`);
    }
  }
  if (!cut || !out) throw new UsageError(`--before and --out are required; ${USAGE}`);
  return { cut, out, actor };
}

/** The master key: `WRIT_MASTER_KEY`, or the embedded data dir's development key. */
async function masterKey(config: WritConfig): Promise<MasterKey> {
  if (config.masterKey) return new MasterKey(config.masterKey, config.masterKeyPrevious);
  const file = join(config.dataDir, 'master-key');
  if (!config.databaseUrl && existsSync(file)) {
    const raw = Buffer.from((await readPrivateFile(file)).trim(), 'base64');
    if (raw.length === 32) return new MasterKey(raw, config.masterKeyPrevious);
  }
  throw new UsageError('the prune marker is signed with the checkpoint key: set WRIT_MASTER_KEY');
}

/**
 * `npm run audit:archive`: exports the oldest whole checkpointed segment of the audit log before
 * the cut, verifies it, then prunes it under a signed marker (docs/operations.md#retention).
 * Runs as the tables' owner: `WRIT_MIGRATION_DATABASE_URL`, or the embedded cluster's
 * superuser. The services' login cannot prune (no DELETE privilege, and the trigger refuses).
 */
export async function auditArchive(args: string[], config: WritConfig, cwd = process.cwd()): Promise<AuditArchiveOutcome> {
  let embedded: EmbeddedDatabase | undefined;
  let pool: Pool | undefined;
  try {
    const options = parseArgs(args, cwd);
    const master = await masterKey(config);
    const signer = master.checkpointSigningKey();
    let url = config.migrationDatabaseUrl;
    if (!url && config.databaseUrl) throw new UsageError('pruning needs the tables’ owner: set WRIT_MIGRATION_DATABASE_URL');
    if (!url) {
      embedded = await startEmbeddedPostgres({ dataDir: config.dataDir });
      url = embedded.url;
    }
    // Keys of earlier master keys (previous, configured, or published beside the checkpoint
    // file) verify older checkpoints.
    let extraKeys: CheckpointPublicKey[] = master.checkpointPublicKeys(config.auditCheckpointPublicKeys).slice(1);
    const keyFile = config.auditCheckpointFile ? publicKeyFileFor(config.auditCheckpointFile) : undefined;
    if (keyFile && existsSync(keyFile)) extraKeys = [...extraKeys, ...parsePublicKeys(await readFile(keyFile, 'utf8'))];
    pool = new Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5_000, application_name: 'writ-audit-archive' });
    const result = await archiveAndPrune({
      pool,
      signer,
      extraKeys,
      cut: options.cut,
      outDir: options.out,
      actor: options.actor,
      checkpointFile: config.auditCheckpointFile,
    });
    return { code: 0, result };
  } catch (error) {
    return { code: 2, error: error instanceof Error ? error.message.split('\n')[0] : String(error) };
  } finally {
    await pool?.end().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
  }
}
