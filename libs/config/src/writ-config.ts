import { createHash, createPublicKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseConnectionString } from 'pg-connection-string';
import { unknownVariables, type UnknownVariable } from './known-variables';

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
  /**
   * `WRIT_ALLOW_NEWER_SCHEMA` (default `false`): start even when the database holds applied
   * migrations this build does not know (a newer release migrated it), with a warning naming
   * them. Unset, such a start is refused (docs/operations.md#upgrading): an older build would run
   * against a schema it was not written for. Only for an older instance kept running during a
   * rolling upgrade whose new migrations are known to be backward compatible (the release notes
   * say so); never to run a rolled-back release on a migrated database.
   */
  readonly allowNewerSchema: boolean;
  /**
   * `WRIT_MIGRATION_LOCK_TIMEOUT_MS` (default 1000; 0: none): PostgreSQL `lock_timeout` of the
   * migrations at start. A schema change waiting for its lock behind a long transaction queues
   * every writer of its table behind it; past this it gives up, its migration is rolled back and
   * the pending migrations run again later (`migrationAttempts`). Keep it below
   * `WRIT_DB_LOCK_TIMEOUT_MS`, so that requests queued behind it are let through before they fail.
   * Concurrent index builds are not bound by it: they queue no writer.
   */
  readonly migrationLockTimeoutMs: number;
  /**
   * `WRIT_MIGRATION_ATTEMPTS` (default 10): runs of the pending migrations at start when one keeps
   * giving up on `WRIT_MIGRATION_LOCK_TIMEOUT_MS` (or is chosen by a deadlock), 1 s apart, doubling
   * to 30 s; then the start fails (`database migration failed`).
   */
  readonly migrationAttempts: number;
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
  /**
   * `WRIT_ALLOWED_HOSTS`: comma-separated `host` or `host:port` names (`writ.example.com`,
   * `admin.internal:4002`, `[::1]`; case and a trailing dot do not matter) that requests to every
   * service must carry in `Host`, besides the hosts of `WRIT_ISSUER` and `WRIT_GATEWAY_URL`
   * (always accepted). A name without a port is accepted on any port; with one, only on it.
   * Another `Host` is answered `421 Misdirected Request` before any other work (authentication,
   * failure counting), so that a page rebinding its own DNS name to a Writ service in a user's
   * browser cannot reach it. `GET /health/live` and `/health/ready` are exempt (probes call
   * by address). Unset: with `WRIT_HOST` a loopback address (the default), the loopback default
   * (`localhost`, `*.localhost`, any IP address, the issuer's and gateway's hosts: a rebinding
   * page always sends its own DNS name); otherwise any `Host` (a warning at start). `*`: any
   * `Host`.
   */
  readonly allowedHosts: AllowedHostsConfig | undefined;
  /** True when {@link allowedHosts} accepts any `Host` because it is unset and `WRIT_HOST` is not loopback (not `*`). */
  readonly anyHostByDefault: boolean;
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
  /**
   * `WRIT_MASTER_KEY_PREVIOUS` (default: none): comma-separated base64 32-byte keys being
   * rotated out. They only open values sealed under them (which each start then re-seals under
   * `WRIT_MASTER_KEY`, recording `master_key.rewrapped`), match audit HMACs and verify audit
   * checkpoints made under them; nothing new is sealed, hashed or signed with them.
   */
  readonly masterKeyPrevious: readonly Buffer[];
  /** `WRIT_POLICY`: a policy `.wasm` or `opa build` bundle; unset means the committed default. */
  readonly policyPath: string | undefined;
  /** `WRIT_LOG_LEVEL` (default `info`): pino level. */
  readonly logLevel: LogLevel;
  /** `WRIT_GATEWAY_BODY_LIMIT` (default 1048576): largest request body the gateway reads, in bytes (413 above). */
  readonly gatewayBodyLimit: number;
  /** `WRIT_UPSTREAM_CONNECT_TIMEOUT_MS` (default 5000): gateway connect timeout to an upstream (504 past it, 502 if refused). */
  readonly upstreamConnectTimeoutMs: number;
  /** `WRIT_UPSTREAM_TIMEOUT_MS` (default 30000): gateway total time for an upstream call (504 past it). */
  readonly upstreamTimeoutMs: number;
  /**
   * `WRIT_UPSTREAM_ALLOWED_NETWORKS`: comma-separated CIDRs (`10.0.0.0/8`, `::1/128`; a bare
   * address is one host) that connector `base_url`s and token URLs may reach besides public
   * addresses. Unset: none with an external database; loopback (`127.0.0.0/8`, `::1/128`)
   * with the embedded quick start (the gateway warns at start). Link-local and cloud metadata
   * addresses are never reachable, whatever this lists. Checked at registration (admin API)
   * and on every resolved address at connect time (gateway).
   */
  readonly upstreamAllowedNetworks: readonly string[];
  /** True when {@link upstreamAllowedNetworks} is the embedded quick start's loopback default (not set explicitly). */
  readonly upstreamLoopbackByDefault: boolean;
  /**
   * Throttling of failed authentication (client authentication at the token, introspection and
   * revocation endpoints, admin tokens, gateway access tokens), counted in PostgreSQL across
   * every instance, per fixed window. Successful requests are never counted.
   */
  readonly throttle: ThrottleConfig;
  /**
   * `WRIT_AUDIT_CHECKPOINT_FILE` (default `<dataDir>/audit-checkpoints.jsonl`): the JSON-lines
   * file outside the database where signed audit checkpoints are appended (and, beside it,
   * `<name>.public-key.json`); verification checks the chain against it. `off`: database only,
   * which no longer detects a superuser who deletes checkpoints (docs/audit.md).
   */
  readonly auditCheckpointFile: string | undefined;
  /**
   * `WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS` (default: none): comma-separated paths (relative to the
   * working directory) of checkpoint public key files, as `npm run audit:verify --
   * --print-public-keys` prints them (a JWKS `{"keys": [...]}` or one JWK; Ed25519, `kid` its
   * RFC 7638 thumbprint, no private member). Read once at start: a file that cannot be read or
   * holds anything else stops the service. The audit verification of the services
   * (`GET /v1/audit/verify`) and of `npm run audit:verify` with the master key (and
   * `audit:archive`) trusts them besides the keys of `WRIT_MASTER_KEY` and
   * `WRIT_MASTER_KEY_PREVIOUS`: after a master key rotation, list the old key's public key here
   * before dropping it from `WRIT_MASTER_KEY_PREVIOUS`, and the checkpoints it signed keep
   * verifying. A dropped key may have leaked, so they are trusted only for what they signed
   * before the current keys' checkpoints (AuditServiceOptions.retiredCheckpointKeys). Nothing
   * is ever signed with them. Whoever can write these files can make the services trust a key
   * of theirs: protect them as the configuration itself.
   */
  readonly auditCheckpointPublicKeys: readonly TrustedCheckpointKey[];
  /** `WRIT_AUDIT_CHECKPOINT_EVERY` (default 1000): sign a checkpoint after this many audit events. */
  readonly auditCheckpointEvery: number;
  /** `WRIT_AUDIT_CHECKPOINT_SECONDS` (default 60): and at least this often while events are written. */
  readonly auditCheckpointSeconds: number;
  /**
   * The approval webhook, or undefined when `WRIT_APPROVAL_WEBHOOK_URL` is unset. The admin
   * service POSTs each new pending approval there, signed with HMAC-SHA256 under the secret
   * (see docs/console.md#approval-notifications), retrying with backoff.
   */
  readonly approvalWebhook: ApprovalWebhookConfig | undefined;
  /** Process life and bounded failure under overload or a hung database. */
  readonly operations: OperationsConfig;
  /** Deadlines of every service's HTTP server (slow or idle callers). */
  readonly http: HttpServerConfig;
  /** OpenTelemetry tracing (off unless the standard `OTEL_*` variables ask for it). */
  readonly tracing: TracingConfig;
  /**
   * `WRIT_*` variables set but read by no service (a typo such as `WRIT_MASTER_KEYS`, or a
   * variable of a removed release), each with the known name it is closest to, if any. Services
   * log them as a warning at start, names only (the value may be a secret); the start goes on,
   * so that a release dropping a variable does not stop instances still configured with it.
   * The project's own tools' variables (`WRIT_TEST_*`, `WRIT_BENCH_*`...: known-variables.ts)
   * are not reported.
   */
  readonly unknownVariables: readonly UnknownVariable[];
}

/** See {@link WritConfig.allowedHosts}. */
export interface AllowedHostsConfig {
  /** Names accepted on any port: lower case, without a trailing dot, IPv6 in brackets. */
  readonly names: readonly string[];
  /** `name:port` accepted only on that port. */
  readonly namesWithPort: readonly string[];
  /** Also `localhost`, `*.localhost` and any IP literal (the loopback default, `WRIT_ALLOWED_HOSTS` unset). */
  readonly loopbackNames: boolean;
}

/** An Ed25519 public JWK that verifies audit checkpoints; see {@link WritConfig.auditCheckpointPublicKeys}. */
export interface TrustedCheckpointKey {
  readonly kty: 'OKP';
  readonly crv: 'Ed25519';
  /** base64url of the 32-byte public key. */
  readonly x: string;
  /** RFC 7638 thumbprint of the key. */
  readonly kid: string;
  readonly alg: 'EdDSA';
  readonly use: 'sig';
}

/** See {@link WritConfig.tracing}. */
export interface TracingConfig {
  /**
   * On when `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless
   * `OTEL_SDK_DISABLED=true` (in any case) or `OTEL_TRACES_EXPORTER=none`. Spans go to that OTLP/HTTP endpoint
   * (the exporter reads its other standard `OTEL_EXPORTER_OTLP_*` variables itself). Off: no
   * SDK is loaded and the request path pays nothing.
   */
  readonly enabled: boolean;
  /** Where spans are sent: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`. */
  readonly endpoint: string | undefined;
  /** `OTEL_SERVICE_NAME`: the spans' `service.name` (default `writ-<service>`). */
  readonly serviceName: string | undefined;
  /**
   * `WRIT_TRACE_FORWARD` (default `true`): the gateway sends a `traceparent` (its upstream
   * span, or the agent's as received when tracing is off) to upstreams; `false` strips
   * `traceparent` and `tracestate` from upstream requests.
   */
  readonly forwardTraceparent: boolean;
  /**
   * Share of traces recorded, 0 to 1 (default 1: every request), from the standard
   * `OTEL_TRACES_SAMPLER` (`always_on`, `always_off`, `traceidratio` or their `parentbased_`
   * forms, read alike) and `OTEL_TRACES_SAMPLER_ARG` (the ratio, default 1). Decided from the
   * trace id at each service: the sampled flag of a caller's `traceparent` is never obeyed (a
   * caller could switch tracing off for its own requests, or force every one of them traced).
   */
  readonly sampleRatio: number;
}

/** See {@link WritConfig.http}. */
export interface HttpServerConfig {
  /**
   * `WRIT_HTTP_HEADERS_TIMEOUT_MS` (default 10000): longest time a caller may take to send a
   * request's headers; past it the connection is answered `408` and closed (slowloris).
   */
  readonly headersTimeoutMs: number;
  /**
   * `WRIT_HTTP_REQUEST_TIMEOUT_MS` (default 30000, at least the headers timeout): longest time a
   * caller may take to send a whole request, body included (the response may take longer).
   */
  readonly requestTimeoutMs: number;
  /**
   * `WRIT_HTTP_KEEP_ALIVE_TIMEOUT_MS` (default 5000): how long an idle kept-alive connection
   * stays open. Behind a load balancer, set it above the balancer's idle timeout.
   */
  readonly keepAliveTimeoutMs: number;
  /**
   * `WRIT_HTTP_SEND_TIMEOUT_MS` (default 30000): longest time an answer may wait for the caller
   * to read it without any of it being sent; past it the connection is closed. A caller that
   * stops reading (or pipelines requests it never reads) would otherwise keep its connection
   * and its answers in memory for ever. Time the service spends working on an answer does not
   * count.
   */
  readonly sendTimeoutMs: number;
  /**
   * `WRIT_METRICS_TOKEN` (unset: `/metrics` answers anyone who reaches the port): when set, at
   * least 32 characters, `GET /metrics` requires `Authorization: Bearer <it>` (Prometheus:
   * `authorization: {credentials: ...}`) and answers `401` otherwise. The scrape names
   * connectors, operations and the policy version.
   */
  readonly metricsToken: string | undefined;
}

/** See {@link WritConfig.operations}. */
export interface OperationsConfig {
  /**
   * `WRIT_SHUTDOWN_TIMEOUT_SECONDS` (default 25): on SIGTERM/SIGINT, how long in-flight requests
   * may take to finish before their connections are cut; audit batches, the last checkpoint,
   * the pools and the embedded PostgreSQL are closed after them. Keep it below the grace period
   * of your supervisor (Kubernetes: 30 s).
   */
  readonly shutdownTimeoutSeconds: number;
  /**
   * `WRIT_WORKERS` (default 1; `auto`: one per available CPU): HTTP worker processes of this
   * service (`node:cluster`, sharing its ports). Each worker is a full instance, sharing nothing
   * with the others but PostgreSQL, as separate instances do; the primary process starts the
   * embedded PostgreSQL (if any), restarts a worker that dies, aggregates `/metrics` and stops
   * the workers on a signal. Each worker has its own `WRIT_DB_POOL_SIZE` connections.
   */
  readonly workers: number;
  /**
   * `WRIT_DB_POOL_SIZE` (default 20 per service process, 30 for `npm start`): connections of
   * the pool each process's requests run on (TypeORM keeps up to 4 of its own; checkpoints,
   * verification and the change listener 1 each: docs/operations.md, Sizing). Size the sum over
   * every instance below PostgreSQL's `max_connections`.
   */
  readonly poolSize: number | undefined;
  /**
   * `WRIT_DB_CHECKOUT_TIMEOUT_MS` (default 3000): longest wait for a pooled connection (or a new
   * one). Past it the request is answered `503` with `Retry-After`.
   */
  readonly checkoutTimeoutMs: number;
  /**
   * `WRIT_DB_STATEMENT_TIMEOUT_MS` (default 10000): PostgreSQL `statement_timeout` of every
   * service connection; the client also gives up a query 1 s after it (a frozen server).
   * A statement past it is answered `503` with `Retry-After`.
   */
  readonly statementTimeoutMs: number;
  /** `WRIT_DB_LOCK_TIMEOUT_MS` (default 3000): PostgreSQL `lock_timeout` (503 past it). */
  readonly lockTimeoutMs: number;
  /**
   * `WRIT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS` (default 30000): PostgreSQL
   * `idle_in_transaction_session_timeout` of every service connection. A transaction left open
   * (a bug, a process frozen between statements) holds its row locks (a task, the audit chain
   * head) until PostgreSQL ends its session past this.
   */
  readonly idleInTransactionTimeoutMs: number;
  /**
   * `WRIT_MAX_IN_FLIGHT` (default 200): requests one service (port) works on at once; more are
   * shed at once with `503` and `Retry-After: 1` before any work, so that the admitted ones keep
   * their latency. Health and metrics endpoints are never shed.
   */
  readonly maxInFlight: number;
  /**
   * `WRIT_KEY_REFRESH_SECONDS` (default 5): how often a service re-reads the signing keys besides
   * when a change is notified (`writ_signing_keys_changed`): the fallback for a notification lost
   * with the listening connection, so a rotation is in force everywhere within this at worst.
   * A service whose last successful read is over 2 minutes old signs nothing once a read fails,
   * until one succeeds (`STALE_KEYS_SIGNING_LIMIT_MS`): above 120, one failed read stops
   * issuance for a few seconds (signing asks for a read every 5 s meanwhile).
   */
  readonly keyRefreshSeconds: number;
  /**
   * `WRIT_KEY_ROTATION_DAYS` (default 90; 0: only by `POST /v1/keys/rotate`): the signing key
   * is rotated when it has been active (signing) for longer than this, counted from when it
   * became active, not from when it was published as `next`. The previous key stays published (`retiring`) and
   * is retired once no token it signed can still be valid (24 h after the rotation).
   */
  readonly keyRotationDays: number;
  /**
   * `WRIT_ECDSA` (`auto` by default, `thread-pool` or `main-thread`): where `node:crypto` signs
   * the tokens this service issues and verifies client assertions. The thread pool leaves the
   * event loop free only when a core is free to run it; on a busy core, waking a pool thread
   * preempts the event loop for as long as the signature takes and adds two context switches.
   * `auto` takes the thread pool when at least one core is left: the available CPUs, less
   * `WRIT_WORKERS`, less one for a PostgreSQL on this host (the embedded one, or a
   * `WRIT_DATABASE_URL` to loopback or a Unix socket).
   */
  readonly ecdsa: EcdsaThread;
}

/** See {@link OperationsConfig.ecdsa}. */
export type EcdsaThread = 'thread-pool' | 'main-thread';

/** See {@link WritConfig.throttle}. */
export interface ThrottleConfig {
  /** `WRIT_THROTTLE_WINDOW_SECONDS` (default 60): length of a counting window. */
  readonly windowSeconds: number;
  /**
   * `WRIT_THROTTLE_SOURCE_FAILURES` (default 20): failures a source address may cause per window
   * and service; past it, that address gets `429` with `Retry-After` until the window ends.
   */
  readonly sourceFailures: number;
  /**
   * `WRIT_THROTTLE_CLIENT_FAILURES` (default 10): failed authentications per window for one
   * claimed client id (from any address); past it, further failures for that id get `429`
   * (a correct authentication of the client still succeeds).
   */
  readonly clientFailures: number;
  /**
   * `WRIT_THROTTLE_AUDIT_EVENTS` (default 5): anonymous failures of one source per window
   * recorded as their own audit events; the rest are counted and recorded as one
   * `throttle.summary` event per source and window, so the log grows by a bounded number of
   * rows whatever an anonymous caller sends.
   */
  readonly auditEvents: number;
}

/** Where and how new pending approvals are announced (Slack, a pager, a ticket system). */
export interface ApprovalWebhookConfig {
  /** `WRIT_APPROVAL_WEBHOOK_URL`: an absolute http(s) URL without userinfo or fragment. */
  readonly url: string;
  /**
   * `WRIT_APPROVAL_WEBHOOK_SECRET` (required with the URL): the HMAC key, `whsec_` + base64
   * (Standard Webhooks, at least 24 bytes once decoded) or a plain string of 32+ characters.
   */
  readonly secret: Buffer;
  /** `WRIT_APPROVAL_WEBHOOK_BACKOFF_MS` (default 5000): delay before the first retry; doubled each time, at most 15 minutes. */
  readonly backoffMs: number;
  /** `WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS` (default 8): attempts per approval before it is given up as `failed`. */
  readonly maxAttempts: number;
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
  // Decimal digits only: Number() would read "1e3", "0x10", "4000.0" and " 10" as ports, and a
  // blank value as 0 (a port chosen at random).
  if (!/^[0-9]{1,5}$/.test(raw) || value > 65535) {
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

/** `WRIT_WORKERS`: `auto` (one per available CPU) or 1..256. */
function workerCount(env: Env, problems: string[]): number {
  const raw = env.WRIT_WORKERS;
  if (raw === 'auto') return availableParallelism();
  if (raw === undefined || raw === '' || (/^[0-9]+$/.test(raw) && Number(raw) >= 1 && Number(raw) <= 256))
    return integer(env, 'WRIT_WORKERS', 1, 1, 256, problems);
  problems.push(`WRIT_WORKERS must be "auto" or an integer from 1 to 256, got "${raw}"`);
  return 1;
}

/** `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`: see {@link TracingConfig.sampleRatio}. */
function sampleRatio(env: Env, problems: string[]): number {
  const sampler = (env.OTEL_TRACES_SAMPLER || 'parentbased_always_on').replace(/^parentbased_/, '');
  if (sampler === 'always_on') return 1;
  if (sampler === 'always_off') return 0;
  const raw = env.OTEL_TRACES_SAMPLER_ARG;
  if (sampler !== 'traceidratio') {
    problems.push(`OTEL_TRACES_SAMPLER must be always_on, always_off or traceidratio (or a parentbased_ form), got "${env.OTEL_TRACES_SAMPLER}"`);
    return 1;
  }
  if (raw === undefined || raw === '') return 1;
  const ratio = Number(raw);
  if (!/^(0|1|0?\.[0-9]+|1\.0*)$/.test(raw) || ratio > 1) {
    problems.push(`OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1, got "${raw}"`);
    return 1;
  }
  return ratio;
}

function boolean(env: Env, name: string, fallback: boolean, problems: string[]): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (raw === 'true' || raw === 'false') return raw === 'true';
  problems.push(`${name} must be true or false, got "${raw}"`);
  return fallback;
}

/**
 * `WRIT_ISSUER`, `WRIT_GATEWAY_URL`: published (metadata, `iss`, `aud`, logs), so neither userinfo
 * nor a query or fragment, not even an empty `?` or `#` (RFC 8414 section 2), which `URL` drops
 * from `search` and `hash` but the raw value, used as the identifier, would keep.
 */
function baseUrl(env: Env, name: string, fallback: string, problems: string[]): string {
  const raw = env[name] || fallback;
  try {
    const url = new URL(raw);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
    if (url.username || url.password) throw new Error('userinfo');
    if (raw.includes('?') || raw.includes('#')) throw new Error('query');
    return raw.replace(/\/+$/, '');
  } catch {
    // A value with userinfo may hold a password: it is not echoed.
    const got = raw.includes('@') ? 'a value with "@" (not shown: it may hold a password)' : `"${raw}"`;
    problems.push(`${name} must be an http(s) URL without userinfo, query or fragment, got ${got}`);
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

function previousMasterKeys(env: Env, problems: string[]): Buffer[] {
  const raw = env.WRIT_MASTER_KEY_PREVIOUS;
  if (!raw || !raw.trim()) return [];
  const keys: Buffer[] = [];
  for (const [index, item] of raw.split(',').entries()) {
    const text = item.trim();
    const key = Buffer.from(text, 'base64');
    if (key.length !== 32 || key.toString('base64').replace(/=+$/, '') !== text.replace(/=+$/, '')) {
      // Says which item, never what it holds.
      problems.push(`WRIT_MASTER_KEY_PREVIOUS must be comma-separated base64 encodings of exactly 32 bytes (item ${index + 1} is not)`);
      return [];
    }
    keys.push(key);
  }
  return keys;
}

/** Largest public key file read (a JWKS of a few keys is well under 1 KiB each). */
const PUBLIC_KEY_FILE_MAX_BYTES = 64 * 1024;

/** JWK members of private or symmetric keys: never in a file of public keys. */
const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/** The key of one JWK of a public key file, or why it is not an Ed25519 public checkpoint key. */
function trustedCheckpointKey(value: unknown): TrustedCheckpointKey | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'holds a key that is not a JWK object';
  const jwk = value as Record<string, unknown>;
  // Never echoed: a private key given by mistake must not reach a log line.
  const secret = PRIVATE_JWK_MEMBERS.find((member) => member in jwk);
  if (secret) return `holds a private key (a "${secret}" member): give the public key only (npm run audit:verify -- --print-public-keys)`;
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') return 'holds a key that is not an Ed25519 public key (kty "OKP", crv "Ed25519")';
  const x = jwk.x;
  if (typeof x !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(x) || Buffer.from(x, 'base64url').toString('base64url') !== x) {
    return 'holds a key whose "x" is not the base64url of 32 bytes';
  }
  try {
    createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
  } catch {
    return 'holds a key that is not a valid Ed25519 public key';
  }
  if (jwk.alg !== undefined && jwk.alg !== 'EdDSA') return 'holds a key whose "alg" is not "EdDSA"';
  if (jwk.use !== undefined && jwk.use !== 'sig') return 'holds a key whose "use" is not "sig"';
  // Checkpoints name their key by this thumbprint: another kid could shadow a trusted key.
  const kid = createHash('sha256')
    .update(JSON.stringify({ crv: 'Ed25519', kty: 'OKP', x }), 'utf8')
    .digest('base64url');
  if (jwk.kid !== undefined && jwk.kid !== kid) return 'holds a key whose "kid" is not its RFC 7638 thumbprint';
  return Object.freeze({ kty: 'OKP', crv: 'Ed25519', x, kid, alg: 'EdDSA', use: 'sig' });
}

/** `WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS`: see {@link WritConfig.auditCheckpointPublicKeys}. */
function auditCheckpointPublicKeys(env: Env, cwd: string, problems: string[]): readonly TrustedCheckpointKey[] {
  const raw = env.WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS;
  if (!raw || !raw.trim()) return Object.freeze([]);
  const keys = new Map<string, TrustedCheckpointKey>();
  for (const [index, item] of raw.split(',').entries()) {
    if (!item.trim()) {
      problems.push(`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS must be comma-separated paths of public key files (item ${index + 1} is empty)`);
      continue;
    }
    const file = resolve(cwd, item.trim());
    const problem = (why: string) => problems.push(`WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS: ${file} ${why}`);
    let text: string;
    try {
      const stat = statSync(file);
      if (!stat.isFile()) {
        problem('is not a file');
        continue;
      }
      if (stat.size > PUBLIC_KEY_FILE_MAX_BYTES) {
        problem(`is larger than ${PUBLIC_KEY_FILE_MAX_BYTES} bytes: not a public key file`);
        continue;
      }
      text = readFileSync(file, 'utf8');
    } catch (error) {
      problem(`cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      problem('is not JSON (expected a public key file as npm run audit:verify -- --print-public-keys prints it)');
      continue;
    }
    const members = typeof value === 'object' && value !== null && 'keys' in value ? value.keys : [value];
    if (!Array.isArray(members) || members.length === 0) {
      problem('holds no key (expected {"keys": [...]} or one JWK)');
      continue;
    }
    const parsed = members.map(trustedCheckpointKey);
    const refused = parsed.find((key): key is string => typeof key === 'string');
    if (refused) {
      problem(refused);
      continue;
    }
    for (const key of parsed as TrustedCheckpointKey[]) keys.set(key.kid, key);
  }
  return Object.freeze([...keys.values()]);
}

/**
 * `WRIT_DATABASE_URL`, `WRIT_MIGRATION_DATABASE_URL`: read here as the driver reads them, so
 * that a malformed one (a bad port, a password with an unencoded reserved character) stops the
 * start naming the variable, not later as the driver's bare `Invalid URL` or `URI malformed`.
 * Neither the value nor the driver's message is echoed: the URL holds the password.
 */
function postgresUrl(env: Env, name: string, problems: string[]): string | undefined {
  const raw = env[name] || undefined;
  if (raw === undefined) return undefined;
  if (!/^postgres(ql)?:\/\//.test(raw)) {
    problems.push(`${name} must be a postgres:// URL`);
    return raw;
  }
  try {
    parseConnectionString(raw);
    // TypeORM (the migrations) also percent-decodes the login and password, strictly.
    const authority = raw.slice(raw.indexOf('//') + 2).split('/')[0];
    decodeURIComponent(authority.slice(0, Math.max(authority.lastIndexOf('@'), 0)));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    problems.push(
      code && /^E[A-Z]+$/.test(code) && code !== 'ERR_INVALID_URL'
        ? `${name} names an sslcert, sslkey or sslrootcert file that cannot be read (${code})`
        : `${name} is not a valid postgres:// URL (not shown: it holds the password; percent-encode reserved characters of the login and password)`,
    );
  }
  return raw;
}

/** True when PostgreSQL runs on this host: embedded, or reached over loopback or a Unix socket. */
export function databaseOnThisHost(databaseUrl: string | undefined): boolean {
  if (!databaseUrl) return true;
  let host: string;
  try {
    // Read as `pg` reads it (a `?host=` socket directory, `[::1]`, an empty host).
    host = parseConnectionString(databaseUrl).host ?? '';
  } catch {
    return false;
  }
  return host === '' || host.startsWith('/') || host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/** Secrets held by different parties: each may be given to one party only. */
const SEPARATE_SECRETS = ['WRIT_MASTER_KEY', 'WRIT_ADMIN_TOKEN', 'WRIT_METRICS_TOKEN', 'WRIT_APPROVAL_WEBHOOK_SECRET'] as const;

/**
 * One secret, one purpose: the metrics token is handed to the scraper, the webhook secret to the
 * receiver of approval notifications, the admin token to operators, and the master key to
 * nobody. The same value in two of them gives whoever holds the lesser one the other's power
 * (a scraper with the admin token; a master key sent over the network as a bearer token), so
 * such a start is refused, naming both variables, never the value.
 */
function distinctSecrets(env: Env, problems: string[]): void {
  const seen = new Map<string, string>();
  for (const name of SEPARATE_SECRETS) {
    const value = env[name]?.trim();
    if (!value) continue;
    const first = seen.get(value);
    if (first) problems.push(`${name} must not be the value of ${first}: give each secret its own value (one purpose each)`);
    else seen.set(value, name);
  }
}

/** `WRIT_ECDSA`: see {@link OperationsConfig.ecdsa}. */
function httpServer(env: Env, problems: string[]): HttpServerConfig {
  const headersTimeoutMs = integer(env, 'WRIT_HTTP_HEADERS_TIMEOUT_MS', 10_000, 100, 600_000, problems);
  const requestTimeoutMs = integer(env, 'WRIT_HTTP_REQUEST_TIMEOUT_MS', 30_000, 100, 3_600_000, problems);
  const metricsToken = env.WRIT_METRICS_TOKEN || undefined;
  if (metricsToken !== undefined && (metricsToken.length < 32 || /\s/.test(metricsToken))) {
    problems.push('WRIT_METRICS_TOKEN must be at least 32 characters, without spaces');
  }
  // Node refuses a headers timeout above the request timeout.
  if (requestTimeoutMs < headersTimeoutMs) problems.push('WRIT_HTTP_REQUEST_TIMEOUT_MS must not be below WRIT_HTTP_HEADERS_TIMEOUT_MS');
  return Object.freeze({
    headersTimeoutMs,
    requestTimeoutMs,
    keepAliveTimeoutMs: integer(env, 'WRIT_HTTP_KEEP_ALIVE_TIMEOUT_MS', 5000, 100, 600_000, problems),
    sendTimeoutMs: integer(env, 'WRIT_HTTP_SEND_TIMEOUT_MS', 30_000, 100, 3_600_000, problems),
    metricsToken,
  });
}

function ecdsaThread(env: Env, workers: number, databaseUrl: string | undefined, problems: string[]): EcdsaThread {
  const raw = env.WRIT_ECDSA || 'auto';
  if (raw === 'thread-pool' || raw === 'main-thread') return raw;
  if (raw !== 'auto') problems.push(`WRIT_ECDSA must be "auto", "thread-pool" or "main-thread", got "${raw}"`);
  const spare = availableParallelism() - workers - (databaseOnThisHost(databaseUrl) ? 1 : 0);
  return spare >= 1 ? 'thread-pool' : 'main-thread';
}

/** A `Host` value (or a `WRIT_ALLOWED_HOSTS` entry) read as its name and port. */
export interface HostName {
  /** Lower case, IDNA ASCII, IPv4 as four decimals, IPv6 compressed in brackets, without a trailing dot. */
  readonly name: string;
  readonly port: number | undefined;
}

const HOST_SHAPE = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?$/;

/**
 * Reads `host` or `host:port` (the `Host` header's shape, RFC 9110 section 7.2) as the URL
 * standard reads a host, so that `LOCALHOST.`, `[0:0::1]` and `127.1` name what they address;
 * `undefined` for anything else (userinfo, paths, spaces, an empty name, port 0).
 */
export function parseHostName(value: string): HostName | undefined {
  const match = HOST_SHAPE.exec(value);
  if (!match) return undefined;
  if (match[1].startsWith('[') && isIP(match[1].slice(1, -1)) !== 6) return undefined;
  const port = match[2] === undefined ? undefined : Number(match[2]);
  if (port !== undefined && (port < 1 || port > 65_535)) return undefined;
  let name: string;
  try {
    name = new URL(`http://${match[1]}/`).hostname;
  } catch {
    return undefined;
  }
  if (name.endsWith('.')) name = name.slice(0, -1);
  return name && !name.endsWith('.') ? { name, port } : undefined;
}

/**
 * True for a loopback listen address (`127.0.0.0/8`, `::1`, `::ffff:127.0.0.0/104`, `localhost`),
 * however it is spelled (`0:0:0:0:0:0:0:1`, `LOCALHOST`, `127.1`): another spelling of loopback
 * must not turn the loopback Host default into "any Host".
 */
function loopbackListen(host: string): boolean {
  const name = parseHostName(isIP(host) === 6 ? `[${host}]` : host)?.name;
  if (name === undefined) return false;
  return name === 'localhost' || name === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(name) || (isIP(name) === 4 && name.startsWith('127.'));
}

/**
 * `WRIT_HOST`: an IP address (IPv6 without brackets, as `listen` takes it) or a DNS name. Checked
 * here so that a stray space, a port or brackets stop the start at once, naming the variable,
 * instead of after the migrations with the resolver's `getaddrinfo ENOTFOUND`.
 */
function listenAddress(env: Env, problems: string[]): string {
  const raw = env.WRIT_HOST;
  if (raw === undefined || raw === '') return '127.0.0.1';
  if (isIP(raw) !== 0) return raw;
  const parsed = raw.startsWith('[') ? undefined : parseHostName(raw);
  if (parsed === undefined || parsed.port !== undefined) {
    problems.push(`WRIT_HOST must be an IP address (IPv6 without brackets) or a host name, without a port or spaces, got "${raw}"`);
    return '127.0.0.1';
  }
  return raw;
}

/** `WRIT_ALLOWED_HOSTS`: see {@link WritConfig.allowedHosts}. */
function allowedHosts(env: Env, listen: string, ownUrls: string[], problems: string[]): AllowedHostsConfig | undefined {
  const raw = env.WRIT_ALLOWED_HOSTS?.trim();
  if (raw === '*') return undefined;
  const own = ownUrls.flatMap((url) => {
    const parsed = URL.canParse(url) ? parseHostName(new URL(url).hostname) : undefined;
    return parsed ? [parsed.name] : [];
  });
  if (!raw) return loopbackListen(listen) ? Object.freeze({ names: Object.freeze(own), namesWithPort: Object.freeze([]), loopbackNames: true }) : undefined;
  const names = new Set(own);
  const namesWithPort = new Set<string>();
  for (const entry of raw.split(',').map((part) => part.trim())) {
    // A bare IPv6 address is one host (it cannot carry a port without brackets).
    const parsed = parseHostName(isIP(entry) === 6 ? `[${entry}]` : entry);
    if (!parsed) problems.push(`WRIT_ALLOWED_HOSTS must be comma-separated host or host:port names (e.g. writ.example.com,[::1]:4002), or *, got "${entry}"`);
    else if (parsed.port === undefined) names.add(parsed.name);
    else namesWithPort.add(`${parsed.name}:${parsed.port}`);
  }
  return Object.freeze({ names: Object.freeze([...names]), namesWithPort: Object.freeze([...namesWithPort]), loopbackNames: false });
}

/** What the embedded quick start may reach when `WRIT_UPSTREAM_ALLOWED_NETWORKS` is unset. */
export const EMBEDDED_UPSTREAM_NETWORKS: readonly string[] = ['127.0.0.0/8', '::1/128'];

/** Normalises one CIDR (`10.0.0.0/8`, `fd00::/8`, or an address alone), or `undefined` when it is not one. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [address, prefixText, extra] = text.trim().split('/');
  if (extra !== undefined) return undefined;
  const version = isIP(address);
  if (version === 0) return undefined;
  const max = version === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) return undefined;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return undefined;
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

function allowedNetworks(env: Env, embedded: boolean, problems: string[]): { networks: readonly string[]; defaulted: boolean } {
  const raw = env.WRIT_UPSTREAM_ALLOWED_NETWORKS;
  if (raw === undefined) return embedded ? { networks: EMBEDDED_UPSTREAM_NETWORKS, defaulted: true } : { networks: [], defaulted: false };
  const networks: string[] = [];
  for (const entry of raw
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean)) {
    const cidr = parseCidr(entry);
    if (!cidr) problems.push(`WRIT_UPSTREAM_ALLOWED_NETWORKS must be comma-separated CIDRs (e.g. 10.0.0.0/8,fd00::/8), got "${entry}"`);
    else networks.push(`${cidr.address}/${cidr.prefix}`);
  }
  return { networks: Object.freeze(networks), defaulted: false };
}

/** Options of {@link loadConfig}. */
export interface LoadConfigOptions {
  /**
   * Accept an external database without `WRIT_MASTER_KEY`: for tools that only read, such as
   * `npm run audit:verify -- --public-key FILE` (offline verification needs no secret).
   */
  masterKeyOptional?: boolean;
}

function approvalWebhook(env: Env, problems: string[]): ApprovalWebhookConfig | undefined {
  const url = env.WRIT_APPROVAL_WEBHOOK_URL || undefined;
  const rawSecret = env.WRIT_APPROVAL_WEBHOOK_SECRET || undefined;
  const backoffMs = integer(env, 'WRIT_APPROVAL_WEBHOOK_BACKOFF_MS', 5000, 10, 3_600_000, problems);
  const maxAttempts = integer(env, 'WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS', 8, 1, 50, problems);
  if (!url) {
    if (rawSecret) problems.push('WRIT_APPROVAL_WEBHOOK_SECRET is set without WRIT_APPROVAL_WEBHOOK_URL');
    return undefined;
  }
  try {
    const parsed = new URL(url);
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('scheme');
    if (parsed.username || parsed.password || parsed.hash) throw new Error('userinfo');
  } catch {
    // The URL is not echoed: a chat webhook URL often carries its own secret.
    problems.push('WRIT_APPROVAL_WEBHOOK_URL must be an absolute http(s) URL without userinfo or fragment');
  }
  let secret: Buffer | undefined;
  if (!rawSecret) problems.push('WRIT_APPROVAL_WEBHOOK_SECRET is required with WRIT_APPROVAL_WEBHOOK_URL');
  else if (rawSecret.startsWith('whsec_')) {
    const body = rawSecret.slice('whsec_'.length);
    secret = Buffer.from(body, 'base64');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || secret.length < 24) {
      problems.push('WRIT_APPROVAL_WEBHOOK_SECRET must be whsec_ and the base64 of at least 24 bytes, or 32+ characters');
      secret = undefined;
    }
  } else if (rawSecret.length < 32) {
    problems.push('WRIT_APPROVAL_WEBHOOK_SECRET must be at least 32 characters (or whsec_ and base64)');
  } else secret = Buffer.from(rawSecret, 'utf8');
  return secret ? { url, secret, backoffMs, maxAttempts } : undefined;
}

/**
 * Reads and validates the `WRIT_*` variables. Throws {@link ConfigError} naming every
 * invalid variable, so that a service refuses to start and says why in one line.
 */
export function loadConfig(env: Env = process.env, cwd: string = process.cwd(), options: LoadConfigOptions = {}): WritConfig {
  const problems: string[] = [];
  const dataDirRaw = env.WRIT_DATA_DIR || './.writ';
  const databaseUrl = postgresUrl(env, 'WRIT_DATABASE_URL', problems);
  const migrationDatabaseUrl = postgresUrl(env, 'WRIT_MIGRATION_DATABASE_URL', problems);
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
  // Whitespace cannot be sent in a bearer token (RFC 6750 section 2.1): such a token would
  // never authenticate, and the operator would be locked out without knowing why.
  if (adminToken !== undefined && (adminToken.length < 32 || /[\s\x00-\x1f\x7f]/.test(adminToken))) {
    problems.push('WRIT_ADMIN_TOKEN must be at least 32 characters, without spaces or control characters');
  }
  distinctSecrets(env, problems);
  const upstream = allowedNetworks(env, !databaseUrl, problems);
  const host = listenAddress(env, problems);
  const issuer = baseUrl(env, 'WRIT_ISSUER', 'http://localhost:4000', problems);
  const gatewayUrl = baseUrl(env, 'WRIT_GATEWAY_URL', 'http://localhost:4001', problems);
  const workers = workerCount(env, problems);
  const dataDir = isAbsolute(dataDirRaw) ? dataDirRaw : resolve(cwd, dataDirRaw);
  const checkpointFileRaw = env.WRIT_AUDIT_CHECKPOINT_FILE || join(dataDir, 'audit-checkpoints.jsonl');
  const tracingOn =
    Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) &&
    // The OpenTelemetry specification reads a boolean variable's "true" in any case.
    env.OTEL_SDK_DISABLED?.trim().toLowerCase() !== 'true' &&
    env.OTEL_TRACES_EXPORTER?.trim() !== 'none';
  const config: WritConfig = {
    databaseUrl,
    migrationDatabaseUrl,
    allowNewerSchema: boolean(env, 'WRIT_ALLOW_NEWER_SCHEMA', false, problems),
    migrationLockTimeoutMs: integer(env, 'WRIT_MIGRATION_LOCK_TIMEOUT_MS', 1000, 0, 3_600_000, problems),
    migrationAttempts: integer(env, 'WRIT_MIGRATION_ATTEMPTS', 10, 1, 1000, problems),
    dataDir,
    host,
    authPort: port(env, 'WRIT_AUTH_PORT', 4000, problems),
    gatewayPort: port(env, 'WRIT_GATEWAY_PORT', 4001, problems),
    adminPort: port(env, 'WRIT_ADMIN_PORT', 4002, problems),
    allowedHosts: allowedHosts(env, host, [issuer, gatewayUrl], problems),
    anyHostByDefault: !env.WRIT_ALLOWED_HOSTS?.trim() && !loopbackListen(host),
    issuer,
    gatewayUrl,
    adminToken,
    masterKey: key,
    masterKeyPrevious: previousMasterKeys(env, problems),
    policyPath: env.WRIT_POLICY ? resolve(cwd, env.WRIT_POLICY) : undefined,
    logLevel,
    gatewayBodyLimit: integer(env, 'WRIT_GATEWAY_BODY_LIMIT', 1024 * 1024, 1024, 64 * 1024 * 1024, problems),
    upstreamConnectTimeoutMs: integer(env, 'WRIT_UPSTREAM_CONNECT_TIMEOUT_MS', 5000, 100, 60_000, problems),
    upstreamTimeoutMs: integer(env, 'WRIT_UPSTREAM_TIMEOUT_MS', 30_000, 100, 600_000, problems),
    upstreamAllowedNetworks: upstream.networks,
    upstreamLoopbackByDefault: upstream.defaulted,
    throttle: Object.freeze({
      windowSeconds: integer(env, 'WRIT_THROTTLE_WINDOW_SECONDS', 60, 1, 86_400, problems),
      sourceFailures: integer(env, 'WRIT_THROTTLE_SOURCE_FAILURES', 20, 1, 1_000_000_000, problems),
      clientFailures: integer(env, 'WRIT_THROTTLE_CLIENT_FAILURES', 10, 1, 1_000_000_000, problems),
      auditEvents: integer(env, 'WRIT_THROTTLE_AUDIT_EVENTS', 5, 1, 10_000, problems),
    }),
    auditCheckpointFile: checkpointFileRaw === 'off' ? undefined : resolve(cwd, checkpointFileRaw),
    auditCheckpointPublicKeys: auditCheckpointPublicKeys(env, cwd, problems),
    auditCheckpointEvery: integer(env, 'WRIT_AUDIT_CHECKPOINT_EVERY', 1000, 1, 10_000_000, problems),
    auditCheckpointSeconds: integer(env, 'WRIT_AUDIT_CHECKPOINT_SECONDS', 60, 1, 86_400, problems),
    approvalWebhook: approvalWebhook(env, problems),
    operations: Object.freeze({
      shutdownTimeoutSeconds: integer(env, 'WRIT_SHUTDOWN_TIMEOUT_SECONDS', 25, 0, 3600, problems),
      workers,
      poolSize: env.WRIT_DB_POOL_SIZE ? integer(env, 'WRIT_DB_POOL_SIZE', 20, 2, 1000, problems) : undefined,
      checkoutTimeoutMs: integer(env, 'WRIT_DB_CHECKOUT_TIMEOUT_MS', 3000, 100, 600_000, problems),
      statementTimeoutMs: integer(env, 'WRIT_DB_STATEMENT_TIMEOUT_MS', 10_000, 100, 3_600_000, problems),
      lockTimeoutMs: integer(env, 'WRIT_DB_LOCK_TIMEOUT_MS', 3000, 100, 3_600_000, problems),
      idleInTransactionTimeoutMs: integer(env, 'WRIT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS', 30_000, 1000, 3_600_000, problems),
      maxInFlight: integer(env, 'WRIT_MAX_IN_FLIGHT', 200, 1, 1_000_000, problems),
      keyRefreshSeconds: integer(env, 'WRIT_KEY_REFRESH_SECONDS', 5, 1, 3600, problems),
      keyRotationDays: integer(env, 'WRIT_KEY_ROTATION_DAYS', 90, 0, 3650, problems),
      ecdsa: ecdsaThread(env, workers, databaseUrl, problems),
    }),
    http: httpServer(env, problems),
    tracing: Object.freeze({
      enabled: tracingOn,
      endpoint:
        env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ||
        (env.OTEL_EXPORTER_OTLP_ENDPOINT ? `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces` : undefined),
      serviceName: env.OTEL_SERVICE_NAME || undefined,
      forwardTraceparent: boolean(env, 'WRIT_TRACE_FORWARD', true, problems),
      // Read only when tracing is on: a sampler set for other software in the environment does not stop Writ.
      sampleRatio: tracingOn ? sampleRatio(env, problems) : 1,
    }),
    unknownVariables: unknownVariables(env),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}
