import { createReadStream, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Pool } from 'pg';
import {
  ArchiveVerification,
  archivePublicKeys,
  AuditService,
  AuditVerification,
  checkpointKeyring,
  ExportVerification,
  parseCheckpointLines,
  parsePruneMarkerLines,
  verifyExportStream,
  CheckpointPublicKey,
  parsePublicKeys,
  readCheckpointFile,
  verifyArchive,
} from '@writ/audit';
import type { WritConfig } from '@writ/config';
import { EmbeddedDatabase, readPrivateFile, startEmbeddedPostgres } from '@writ/database';
import { MasterKey } from '@writ/keys';

/** What `npm run audit:verify` prints and how it exits. */
export interface AuditVerifyOutcome {
  /** 0: valid; 1: not valid; 2: could not verify. */
  code: 0 | 1 | 2;
  result?:
    | (AuditVerification & { checkpoint_file?: string })
    | (ArchiveVerification & { archive: string; key_source: 'public-key' | 'master-key' | 'archive' })
    | (ExportVerification & { export: string; checkpoint_file: string | null });
  /** `--print-public-keys`: the checkpoint public keys of the configured master keys (not those of WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS), as a key file. */
  publicKeys?: { keys: CheckpointPublicKey[] };
  error?: string;
}

/** Thrown for a wrong command line or an unreadable input: exit 2. */
class UsageError extends Error {}

const USAGE =
  'usage: npm run audit:verify -- [--checkpoints FILE] [--public-key FILE]... | --archive DIR [--public-key FILE]... | --export FILE --checkpoints FILE [--public-key FILE]... | --print-public-keys';

const FLAGS = { '--checkpoints': 'checkpoints', '--archive': 'archive', '--export': 'export' } as const;

interface VerifyArgs {
  checkpoints?: string;
  /** Every `--public-key FILE` given (several after master key rotations); `undefined` for none. */
  publicKey?: string[];
  archive?: string;
  export?: string;
  printPublicKeys?: boolean;
}

/**
 * The command line. A flag given twice (but `--public-key`), or two things to verify at once, is a
 * usage error: the last `--checkpoints` silently won, and `--archive` silently ignored `--export`
 * and `--checkpoints`, so an auditor could be told "valid" about files that were never read.
 */
function parseArgs(args: string[], cwd: string): VerifyArgs {
  const parsed: VerifyArgs = {};
  for (let i = 0; i < args.length; i += 1) {
    const value = args[i + 1];
    const flag = FLAGS[args[i] as keyof typeof FLAGS] as (typeof FLAGS)[keyof typeof FLAGS] | undefined;
    if (args[i] === '--print-public-keys' && !parsed.printPublicKeys) {
      parsed.printPublicKeys = true;
    } else if (args[i] === '--public-key' && value && !value.startsWith('--')) {
      parsed.publicKey = [...(parsed.publicKey ?? []), resolve(cwd, value)];
      i += 1;
    } else if (flag && parsed[flag] !== undefined) {
      throw new UsageError(`${args[i]} is given twice; ${USAGE}`);
    } else if (flag && value && !value.startsWith('--')) {
      parsed[flag] = resolve(cwd, value);
      i += 1;
    } else {
      throw new UsageError(`unexpected argument ${JSON.stringify(args[i])}; ${USAGE}`);
    }
  }
  const modes = [parsed.printPublicKeys && '--print-public-keys', parsed.archive && '--archive', parsed.export && '--export'].filter(Boolean);
  if (modes.length > 1) throw new UsageError(`${modes.join(' and ')} cannot be combined; ${USAGE}`);
  if (parsed.checkpoints && (parsed.archive || parsed.printPublicKeys)) {
    throw new UsageError(
      `--checkpoints does not apply to ${parsed.archive ? '--archive (its checkpoints are in the archive)' : '--print-public-keys'}; ${USAGE}`,
    );
  }
  return parsed;
}

/**
 * The verification keys: from every `--public-key` file (offline: no master key needed, and
 * only those keys), else derived from the master keys (`WRIT_MASTER_KEY`, or the embedded data
 * dir's `master-key` file, and those of `WRIT_MASTER_KEY_PREVIOUS`, which signed checkpoints
 * before a rotation) with the public keys of `WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS` (master keys
 * dropped since), as the services trust them.
 */
async function verificationKeys(config: WritConfig, publicKeyFiles: string[] | undefined): Promise<CheckpointPublicKey[]> {
  const { keys, retired } = await chainVerificationKeys(config, publicKeyFiles);
  return [...keys, ...retired];
}

/**
 * {@link verificationKeys} for the database's chain, as the services verify it: the keys of
 * `WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS` apart, trusted only for what they signed before the
 * master keys took over (see AuditServiceOptions.retiredCheckpointKeys).
 */
async function chainVerificationKeys(
  config: WritConfig,
  publicKeyFiles: string[] | undefined,
): Promise<{ keys: CheckpointPublicKey[]; retired: CheckpointPublicKey[] }> {
  if (publicKeyFiles) {
    const keys: CheckpointPublicKey[] = [];
    for (const file of publicKeyFiles) {
      if (!existsSync(file)) throw new UsageError(`no such public key file: ${file}`);
      keys.push(...parsePublicKeys(await readFile(file, 'utf8')));
    }
    return { keys, retired: [] };
  }
  const keys = (await masterKey(config)).checkpointPublicKeys();
  const kids = new Set(keys.map((key) => key.kid));
  return { keys, retired: config.auditCheckpointPublicKeys.filter((key) => !kids.has(key.kid)).map((key) => ({ ...key })) };
}

/** The master key: `WRIT_MASTER_KEY`, or the embedded data dir's development key, with the previous ones. */
async function masterKey(config: WritConfig): Promise<MasterKey> {
  if (config.masterKey) return new MasterKey(config.masterKey, config.masterKeyPrevious);
  const file = join(config.dataDir, 'master-key');
  if (!config.databaseUrl && existsSync(file)) {
    const raw = Buffer.from((await readPrivateFile(file)).trim(), 'base64');
    if (raw.length === 32) return new MasterKey(raw, config.masterKeyPrevious);
  }
  throw new UsageError('no key to verify checkpoints with: set WRIT_MASTER_KEY or pass --public-key FILE');
}

/**
 * `npm run audit:verify`: walks the audit chain of the configured database (embedded unless
 * `WRIT_DATABASE_URL`) and checks it against the signed checkpoints, those in the database and
 * those of the checkpoint file (`--checkpoints FILE`, default the configured
 * `WRIT_AUDIT_CHECKPOINT_FILE` when it exists). With `--public-key FILE` only the public key
 * is needed, never the master key.
 */
export async function auditVerify(args: string[], config: WritConfig, cwd = process.cwd()): Promise<AuditVerifyOutcome> {
  let embedded: EmbeddedDatabase | undefined;
  let pool: Pool | undefined;
  try {
    const options = parseArgs(args, cwd);
    if (options.printPublicKeys) {
      // A key file for `--public-key` or WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: to verify offline, or
      // once a previous master key is dropped. The master keys' only: never a configured key.
      return { code: 0, publicKeys: { keys: (await masterKey(config)).checkpointPublicKeys() } };
    }
    if (options.archive) return await archiveOutcome(options.archive, options.publicKey, config);
    if (options.export) return await exportOutcome(options.export, options.checkpoints, options.publicKey, config);
    const { keys, retired } = await chainVerificationKeys(config, options.publicKey);
    const checkpointFile = options.checkpoints ?? config.auditCheckpointFile;
    if (options.checkpoints && !existsSync(options.checkpoints)) throw new UsageError(`no such checkpoint file: ${options.checkpoints}`);
    const external = checkpointFile ? await readCheckpointFile(checkpointFile) : undefined;
    let url = config.databaseUrl;
    if (!url) {
      embedded = await startEmbeddedPostgres({ dataDir: config.dataDir });
      url = embedded.url;
    }
    pool = new Pool({ connectionString: url, max: 2, connectionTimeoutMillis: 5_000 });
    const result = await new AuditService(pool, { checkpointKeys: keys, retiredCheckpointKeys: retired }).verify({ external });
    return { code: result.valid ? 0 : 1, result: external ? { ...result, checkpoint_file: checkpointFile } : result };
  } catch (error) {
    return { code: 2, error: error instanceof Error ? error.message.split('\n')[0] : String(error) };
  } finally {
    await pool?.end().catch(() => undefined);
    await embedded?.stop().catch(() => undefined);
  }
}

/**
 * `--archive DIR`: verifies an archive of `npm run audit:archive` offline, with the key of
 * `--public-key FILE`, else the master key's, else the archive's own `public-key.json` (which
 * proves only that the archive is intact, not who signed it: pass the published key file).
 */
async function archiveOutcome(dir: string, publicKeyFile: string[] | undefined, config: WritConfig): Promise<AuditVerifyOutcome> {
  if (!existsSync(dir)) throw new UsageError(`no such archive directory: ${dir}`);
  let keySource: 'public-key' | 'master-key' | 'archive' = 'archive';
  let keys: CheckpointPublicKey[];
  if (publicKeyFile || config.masterKey) {
    keys = await verificationKeys(config, publicKeyFile);
    keySource = publicKeyFile ? 'public-key' : 'master-key';
  } else {
    keys = await archivePublicKeys(dir);
  }
  const result = await verifyArchive(dir, checkpointKeyring(keys));
  return { code: result.valid ? 0 : 1, result: { ...result, archive: dir, key_source: keySource } };
}

/**
 * `--export FILE`: verifies offline, without the database, a download of `GET /v1/audit/export`
 * against the checkpoints (and prune markers) of `--checkpoints FILE` (default: the configured
 * checkpoint file), with the key of `--public-key FILE` or else the master key's.
 */
async function exportOutcome(
  file: string,
  checkpointsFile: string | undefined,
  publicKeyFile: string[] | undefined,
  config: WritConfig,
): Promise<AuditVerifyOutcome> {
  if (!existsSync(file)) throw new UsageError(`no such export file: ${file}`);
  const keys = await verificationKeys(config, publicKeyFile);
  const source = checkpointsFile ?? config.auditCheckpointFile;
  if (checkpointsFile && !existsSync(checkpointsFile)) throw new UsageError(`no such checkpoint file: ${checkpointsFile}`);
  const anchors = source && existsSync(source) ? await readFile(source, 'utf8') : undefined;
  // A stream: an export of millions of events is larger than a string can be.
  const result = await verifyExportStream(
    createReadStream(file, { encoding: 'utf8', highWaterMark: 1 << 20 }),
    checkpointKeyring(keys),
    anchors === undefined ? {} : { checkpoints: parseCheckpointLines(anchors), markers: parsePruneMarkerLines(anchors) },
  );
  return { code: result.valid ? 0 : 1, result: { ...result, export: file, checkpoint_file: anchors === undefined ? null : source! } };
}
