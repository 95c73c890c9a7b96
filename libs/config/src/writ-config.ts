import { isAbsolute, join, resolve } from 'node:path';

/** Log levels accepted by pino. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * The validated configuration of every Writ service. It is built once, at start, by
 * {@link loadConfig}; nothing else reads `process.env`.
 */
export interface WritConfig {
  /** `WRIT_DATABASE_URL`: external PostgreSQL; unset means the embedded one under `dataDir`. */
  readonly databaseUrl: string | undefined;
  /**
   * `WRIT_MIGRATION_DATABASE_URL`: with an external database, the tables' owner that runs the
   * migrations at start, so that `WRIT_DATABASE_URL` can be a least-privilege login (member of
   * `writ_service`); unset: the migrations run as `WRIT_DATABASE_URL`.
   */
  readonly migrationDatabaseUrl: string | undefined;
  /** `WRIT_DATA_DIR` (default `./.writ`): embedded database, generated dev keys, admin token file. */
  readonly dataDir: string;
  /** `WRIT_HOST` (default `127.0.0.1`): listen address of every service. */
  readonly host: string;
  /** `WRIT_AUTH_PORT` (default 4000): authorization server port. */
  readonly authPort: number;
  /** `WRIT_GATEWAY_PORT` (default 4001): connector gateway port. */
  readonly gatewayPort: number;
  /** `WRIT_ADMIN_PORT` (default 4002): admin API port. */
  readonly adminPort: number;
  /** `WRIT_ISSUER` (default `http://localhost:4000`): issuer identifier, base of the server's URLs. */
  readonly issuer: string;
  /** `WRIT_GATEWAY_URL` (default `http://localhost:4001`): base of connector resource URLs (token `aud`). */
  readonly gatewayUrl: string;
  /** `WRIT_ADMIN_TOKEN`: bootstrap admin bearer token; unset means generated into `dataDir/admin-token`. */
  readonly adminToken: string | undefined;
  /**
   * `WRIT_MASTER_KEY`: base64 of 32 bytes sealing upstream secrets and private keys. Unset is
   * allowed only with the embedded database (a key is then generated into `dataDir`).
   */
  readonly masterKey: Buffer | undefined;
  /** `WRIT_POLICY`: a policy `.wasm` or `opa build` bundle; unset means the committed default. */
  readonly policyPath: string | undefined;
  /** `WRIT_LOG_LEVEL` (default `info`): pino level. */
  readonly logLevel: LogLevel;
  /** `WRIT_GATEWAY_BODY_LIMIT` (default 1048576): largest request body the gateway reads, in bytes (413 above). */
  readonly gatewayBodyLimit: number;
  /** `WRIT_UPSTREAM_CONNECT_TIMEOUT_MS` (default 5000): gateway connect timeout to an upstream (502 past it). */
  readonly upstreamConnectTimeoutMs: number;
  /** `WRIT_UPSTREAM_TIMEOUT_MS` (default 30000): gateway total time for an upstream call (504 past it). */
  readonly upstreamTimeoutMs: number;
  /**
   * `WRIT_AUDIT_CHECKPOINT_FILE` (default `<dataDir>/audit-checkpoints.jsonl`): the JSON-lines
   * file outside the database where signed audit checkpoints are appended (and, beside it,
   * `<name>.public-key.json`); verification checks the chain against it. `off`: database only,
   * which no longer detects a superuser who deletes checkpoints (docs/audit.md).
   */
  readonly auditCheckpointFile: string | undefined;
  /** `WRIT_AUDIT_CHECKPOINT_EVERY` (default 1000): sign a checkpoint after this many audit events. */
  readonly auditCheckpointEvery: number;
  /** `WRIT_AUDIT_CHECKPOINT_SECONDS` (default 60): and at least this often while events are written. */
  readonly auditCheckpointSeconds: number;
}

/** Thrown when the environment does not describe a valid configuration; one line per problem. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration: ${problems.join('; ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function port(env: Env, name: string, fallback: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    problems.push(`${name} must be a port number (0-65535), got "${raw}"`);
    return fallback;
  }
  return value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number, problems: string[]): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!/^[0-9]+$/.test(raw) || value < min || value > max) {
    problems.push(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
    return fallback;
  }
  return value;
}

function baseUrl(env: Env, name: string, fallback: string, problems: string[]): string {
  const raw = env[name] || fallback;
  try {
    const url = new URL(raw);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
    if (url.search || url.hash) throw new Error('query');
    return raw.replace(/\/+$/, '');
  } catch {
    problems.push(`${name} must be an http(s) URL without query or fragment, got "${raw}"`);
    return fallback;
  }
}

function masterKey(env: Env, problems: string[]): Buffer | undefined {
  const raw = env.WRIT_MASTER_KEY;
  if (!raw) return undefined;
  const key = Buffer.from(raw, 'base64');
  if (key.length !== 32 || key.toString('base64').replace(/=+$/, '') !== raw.trim().replace(/=+$/, '')) {
    problems.push('WRIT_MASTER_KEY must be the base64 encoding of exactly 32 bytes');
    return undefined;
  }
  return key;
}

/** Options of {@link loadConfig}. */
export interface LoadConfigOptions {
  /**
   * Accept an external database without `WRIT_MASTER_KEY`: for tools that only read, such as
   * `npm run audit:verify -- --public-key FILE` (offline verification needs no secret).
   */
  masterKeyOptional?: boolean;
}

/**
 * Reads and validates the `WRIT_*` variables. Throws {@link ConfigError} naming every
 * invalid variable, so that a service refuses to start and says why in one line.
 */
export function loadConfig(env: Env = process.env, cwd: string = process.cwd(), options: LoadConfigOptions = {}): WritConfig {
  const problems: string[] = [];
  const dataDirRaw = env.WRIT_DATA_DIR || './.writ';
  const databaseUrl = env.WRIT_DATABASE_URL || undefined;
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('WRIT_DATABASE_URL must be a postgres:// URL');
  }
  const migrationDatabaseUrl = env.WRIT_MIGRATION_DATABASE_URL || undefined;
  if (migrationDatabaseUrl && !/^postgres(ql)?:\/\//.test(migrationDatabaseUrl)) {
    problems.push('WRIT_MIGRATION_DATABASE_URL must be a postgres:// URL');
  }
  if (migrationDatabaseUrl && !databaseUrl) {
    problems.push('WRIT_MIGRATION_DATABASE_URL needs WRIT_DATABASE_URL (the embedded database migrates as its own superuser)');
  }
  const key = masterKey(env, problems);
  if (databaseUrl && !key && !options.masterKeyOptional && !problems.some((p) => p.startsWith('WRIT_MASTER_KEY'))) {
    problems.push('WRIT_MASTER_KEY is required with WRIT_DATABASE_URL (base64 of 32 bytes)');
  }
  const logLevel = (env.WRIT_LOG_LEVEL || 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`WRIT_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}`);
  const adminToken = env.WRIT_ADMIN_TOKEN || undefined;
  if (adminToken !== undefined && adminToken.length < 32) {
    problems.push('WRIT_ADMIN_TOKEN must be at least 32 characters');
  }
  const dataDir = isAbsolute(dataDirRaw) ? dataDirRaw : resolve(cwd, dataDirRaw);
  const checkpointFileRaw = env.WRIT_AUDIT_CHECKPOINT_FILE || join(dataDir, 'audit-checkpoints.jsonl');
  const config: WritConfig = {
    databaseUrl,
    migrationDatabaseUrl,
    dataDir,
    host: env.WRIT_HOST || '127.0.0.1',
    authPort: port(env, 'WRIT_AUTH_PORT', 4000, problems),
    gatewayPort: port(env, 'WRIT_GATEWAY_PORT', 4001, problems),
    adminPort: port(env, 'WRIT_ADMIN_PORT', 4002, problems),
    issuer: baseUrl(env, 'WRIT_ISSUER', 'http://localhost:4000', problems),
    gatewayUrl: baseUrl(env, 'WRIT_GATEWAY_URL', 'http://localhost:4001', problems),
    adminToken,
    masterKey: key,
    policyPath: env.WRIT_POLICY ? resolve(cwd, env.WRIT_POLICY) : undefined,
    logLevel,
    gatewayBodyLimit: integer(env, 'WRIT_GATEWAY_BODY_LIMIT', 1024 * 1024, 1024, 64 * 1024 * 1024, problems),
    upstreamConnectTimeoutMs: integer(env, 'WRIT_UPSTREAM_CONNECT_TIMEOUT_MS', 5000, 100, 60_000, problems),
    upstreamTimeoutMs: integer(env, 'WRIT_UPSTREAM_TIMEOUT_MS', 30_000, 100, 600_000, problems),
    auditCheckpointFile: checkpointFileRaw === 'off' ? undefined : resolve(cwd, checkpointFileRaw),
    auditCheckpointEvery: integer(env, 'WRIT_AUDIT_CHECKPOINT_EVERY', 1000, 1, 10_000_000, problems),
    auditCheckpointSeconds: integer(env, 'WRIT_AUDIT_CHECKPOINT_SECONDS', 60, 1, 86_400, problems),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}
