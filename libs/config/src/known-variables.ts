// The names libs/config reads, kept apart from writ-config.ts so that the README check (which
// reads the names quoted there) does not count these lists as variables read.

/** A `WRIT_*` variable set but read by no service (WritConfig.unknownVariables). */
export interface UnknownVariable {
  readonly name: string;
  /** The known variable the name most likely meant (one or two characters off, or a plural). */
  readonly suggestion: string | undefined;
}

/** Every `WRIT_*` variable `loadConfig` reads (the spec checks this list against the code). */
export const KNOWN_VARIABLES: readonly string[] = Object.freeze([
  'WRIT_DATABASE_URL',
  'WRIT_MIGRATION_DATABASE_URL',
  'WRIT_ALLOW_NEWER_SCHEMA',
  'WRIT_MIGRATION_LOCK_TIMEOUT_MS',
  'WRIT_MIGRATION_ATTEMPTS',
  'WRIT_DATA_DIR',
  'WRIT_HOST',
  'WRIT_AUTH_PORT',
  'WRIT_GATEWAY_PORT',
  'WRIT_ADMIN_PORT',
  'WRIT_ALLOWED_HOSTS',
  'WRIT_ISSUER',
  'WRIT_GATEWAY_URL',
  'WRIT_ADMIN_TOKEN',
  'WRIT_MASTER_KEY',
  'WRIT_MASTER_KEY_PREVIOUS',
  'WRIT_POLICY',
  'WRIT_LOG_LEVEL',
  'WRIT_GATEWAY_BODY_LIMIT',
  'WRIT_UPSTREAM_CONNECT_TIMEOUT_MS',
  'WRIT_UPSTREAM_TIMEOUT_MS',
  'WRIT_UPSTREAM_ALLOWED_NETWORKS',
  'WRIT_THROTTLE_WINDOW_SECONDS',
  'WRIT_THROTTLE_SOURCE_FAILURES',
  'WRIT_THROTTLE_CLIENT_FAILURES',
  'WRIT_THROTTLE_AUDIT_EVENTS',
  'WRIT_AUDIT_CHECKPOINT_FILE',
  'WRIT_AUDIT_CHECKPOINT_PUBLIC_KEYS',
  'WRIT_AUDIT_CHECKPOINT_EVERY',
  'WRIT_AUDIT_CHECKPOINT_SECONDS',
  'WRIT_APPROVAL_WEBHOOK_URL',
  'WRIT_APPROVAL_WEBHOOK_SECRET',
  'WRIT_APPROVAL_WEBHOOK_BACKOFF_MS',
  'WRIT_APPROVAL_WEBHOOK_MAX_ATTEMPTS',
  'WRIT_SHUTDOWN_TIMEOUT_SECONDS',
  'WRIT_WORKERS',
  'WRIT_DB_POOL_SIZE',
  'WRIT_DB_CHECKOUT_TIMEOUT_MS',
  'WRIT_DB_STATEMENT_TIMEOUT_MS',
  'WRIT_DB_LOCK_TIMEOUT_MS',
  'WRIT_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS',
  'WRIT_MAX_IN_FLIGHT',
  'WRIT_KEY_REFRESH_SECONDS',
  'WRIT_KEY_ROTATION_DAYS',
  'WRIT_ECDSA',
  'WRIT_HTTP_HEADERS_TIMEOUT_MS',
  'WRIT_HTTP_REQUEST_TIMEOUT_MS',
  'WRIT_HTTP_KEEP_ALIVE_TIMEOUT_MS',
  'WRIT_HTTP_SEND_TIMEOUT_MS',
  'WRIT_METRICS_TOKEN',
  'WRIT_TRACE_FORWARD',
]);

/**
 * `WRIT_*` variables of the project's own tools, not of the services: the test harness and the
 * benchmarks (`WRIT_TEST_*`, `WRIT_BENCH_*`, `WRIT_AB_*`), the production install check
 * (`WRIT_CHECK_*`), the policy build (`WRIT_OPA`, `WRIT_TOOLS_DIR`) and the SDK and console
 * tests. Not reported as unknown.
 */
export const TOOL_VARIABLES: readonly string[] = Object.freeze(['WRIT_OPA', 'WRIT_TOOLS_DIR', 'WRIT_NODE', 'WRIT_CHROMIUM', 'WRIT_CONSOLE_SCREENSHOTS']);
const TOOL_PREFIXES = ['WRIT_TEST_', 'WRIT_BENCH_', 'WRIT_AB_', 'WRIT_CHECK_'];

/** Levenshtein distance (names are short). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length];
}

/** The `WRIT_*` names of `env` that nothing reads, sorted, each with its likeliest meaning (WritConfig.unknownVariables). */
export function unknownVariables(env: Readonly<Record<string, string | undefined>>): readonly UnknownVariable[] {
  const known = new Set(KNOWN_VARIABLES);
  const unknown = Object.keys(env)
    .filter(
      (name) =>
        name.toUpperCase().startsWith('WRIT_') &&
        !known.has(name) &&
        !TOOL_VARIABLES.includes(name) &&
        !TOOL_PREFIXES.some((prefix) => name.startsWith(prefix)),
    )
    .sort();
  return Object.freeze(
    unknown.map((name) => {
      const upper = name.toUpperCase();
      let suggestion: string | undefined;
      let best = 3;
      for (const candidate of KNOWN_VARIABLES) {
        const distance = editDistance(upper, candidate);
        if (distance < best) [best, suggestion] = [distance, candidate];
      }
      return Object.freeze({ name, suggestion });
    }),
  );
}

/**
 * The variables that hold secrets: keys, tokens, and URLs that may carry a password. Read once
 * by `loadConfig`; {@link withdrawSecretVariables} then takes them out of the process's
 * environment, which every child process inherits (the embedded PostgreSQL and its initdb run,
 * as root, as the `postgres` user, and a database superuser reads `/proc/self/environ`).
 */
export const SECRET_VARIABLES: readonly string[] = Object.freeze([
  'WRIT_MASTER_KEY',
  'WRIT_MASTER_KEY_PREVIOUS',
  'WRIT_ADMIN_TOKEN',
  'WRIT_DATABASE_URL',
  'WRIT_MIGRATION_DATABASE_URL',
  'WRIT_APPROVAL_WEBHOOK_SECRET',
  'WRIT_METRICS_TOKEN',
]);

/**
 * Removes the {@link SECRET_VARIABLES} from `env` (the process environment) once the
 * configuration has been read, and returns them: a process that forks workers hands them on
 * explicitly (`cluster.fork(secrets)`), no other child process gets them.
 */
export function withdrawSecretVariables(env: Record<string, string | undefined> = process.env): Record<string, string> {
  const withdrawn: Record<string, string> = {};
  for (const name of SECRET_VARIABLES) {
    const value = env[name];
    if (value === undefined) continue;
    withdrawn[name] = value;
    delete env[name];
  }
  return withdrawn;
}
