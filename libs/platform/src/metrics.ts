import cluster from 'node:cluster';
import type { Pool } from 'pg';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AuditRecord } from '@writ/audit';
import type { TaggedTable } from '@writ/grants';
import { observePolicyEvaluations } from '@writ/policy';
import { clusterMetrics } from './worker-cluster';

let refusedPolicyReloads = 0;

/** Counts a refused policy reload of this process (policy-watch). */
export function noteRefusedPolicyReload(): void {
  refusedPolicyReloads += 1;
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** The `connector` label of a gateway call refused before its token was verified. */
const UNVERIFIED = 'other';

/** Every table whose rows carry an integrity tag: the `table` label's whole set, each shown from 0. */
const TAGGED_TABLES: readonly TaggedTable[] = ['tasks', 'agents', 'orchestrators', 'admin_tokens', 'connectors', 'identity_providers', 'policies', 'approvals'];

/** Which services' failures the throttle counts (`FailureThrottle`'s scopes): the `scope` label's whole set. */
const THROTTLE_SCOPES = ['oauth', 'admin', 'gateway'] as const;

/** A throttle scope, as {@link THROTTLE_SCOPES} lists them. */
export type ThrottleMetricScope = (typeof THROTTLE_SCOPES)[number];

/** Why a request was refused for its `Host` (`allowed-hosts`): `421`, or `400` for a missing or malformed one. */
export type HostRefusal = 'not_allowed' | 'malformed';

/** A label value from event data: a short string, or `none`. Bounded so labels cannot explode. */
function label(value: unknown): string {
  return typeof value === 'string' && value !== '' ? value.slice(0, 64) : typeof value === 'number' ? String(value) : 'none';
}

/**
 * Writ's Prometheus metrics, one registry per runtime (served at `GET /metrics` by every
 * service of the process). Exchanges, gateway calls and upstream latency are counted from the
 * audit events as they commit: what is counted is exactly what was recorded, and the hot paths
 * pay one callback per commit, nothing more. docs/operations.md lists every metric.
 */
export class WritMetrics {
  readonly registry = new Registry();
  private readonly httpRequests: Counter<'service' | 'method' | 'status'>;
  private readonly httpDuration: Histogram<'service'>;
  private readonly shedRequests: Counter<'service' | 'reason'>;
  private readonly exchanges: Counter<'outcome' | 'reason'>;
  private readonly gatewayCalls: Counter<'connector' | 'operation' | 'status'>;
  private readonly upstreamLatency: Histogram<'connector'>;
  private readonly auditCommit: Histogram<string>;
  private readonly auditBatch: Histogram<string>;
  private readonly auditOneMessages: Counter<string>;
  private readonly policyEvaluation: Histogram<string>;
  private readonly masterKeyRewrap: Gauge<'table' | 'outcome'>;
  private readonly integrityFailures: Counter<'table'>;
  private readonly hostRefusals: Counter<'service' | 'reason'>;
  private readonly throttleMemoryRefusals: Counter<'scope'>;
  private readonly throttleFlushFailures: Counter<string>;
  private readonly idempotency: Counter<'outcome'>;
  private readonly refreshDeferred: Counter<'connector'>;
  private readonly unrefreshedToken: Counter<'connector' | 'reason'>;
  private readonly tokenFetchDeferred: Counter<'connector' | 'reason'>;
  /** Each live failure throttle's blocked sources held in memory, per scope (summed at a scrape). */
  private readonly throttles = new Set<() => ReadonlyMap<string, number>>();
  private policyVersion: (() => string) | undefined;
  private readonly stopObserving: () => void;

  constructor(pool: Pool | undefined, options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (cluster.isWorker) {
      // WRIT_WORKERS > 1: the primary aggregates every worker's registry (see clusterMetrics).
      AggregatorRegistry.setRegistries([this.registry]);
      new AggregatorRegistry();
    }
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'writ_' });
    this.httpRequests = new Counter({
      name: 'writ_http_requests_total',
      help: 'HTTP requests answered, by service, method and status',
      labelNames: ['service', 'method', 'status'],
      registers,
    });
    this.httpDuration = new Histogram({
      name: 'writ_http_request_duration_seconds',
      help: 'HTTP request latency by service (admitted requests)',
      labelNames: ['service'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.shedRequests = new Counter({
      name: 'writ_shed_requests_total',
      help: 'Requests refused 503 before any work: overload (in-flight limit) or draining (shutdown)',
      labelNames: ['service', 'reason'],
      registers,
    });
    this.exchanges = new Counter({
      name: 'writ_token_exchanges_total',
      help: 'Token exchanges by outcome (success, denied, info = approval pending, refused) and reason',
      labelNames: ['outcome', 'reason'],
      registers,
    });
    this.gatewayCalls = new Counter({
      name: 'writ_gateway_calls_total',
      help: 'Gateway calls by connector, operation and status (forwarded, or the refusal status)',
      labelNames: ['connector', 'operation', 'status'],
      registers,
    });
    this.upstreamLatency = new Histogram({
      name: 'writ_upstream_latency_seconds',
      help: 'Upstream response latency by connector',
      labelNames: ['connector'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.auditCommit = new Histogram({
      name: 'writ_audit_commit_seconds',
      help: 'Audit group commit latency (checkout to COMMIT)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers,
    });
    this.auditBatch = new Histogram({
      name: 'writ_audit_batch_events',
      help: 'Audit events per group commit',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers,
    });
    this.auditOneMessages = new Counter({
      name: 'writ_audit_one_message_batches_total',
      help: 'Audit batches sent as one message: committed, or written again in two round trips (expectation_failed: another writer moved the chain head, or a credential was not recorded)',
      labelNames: ['outcome'],
      registers,
    });
    this.masterKeyRewrap = new Gauge({
      name: 'writ_master_key_rewrap_rows',
      // One worker runs the re-seal (WRIT_WORKERS): the primary reports its figures (max), not a sum.
      aggregator: 'max',
      help: 'Rows the re-seal under the current master key run by this process handled so far, per table and outcome (rewrapped, skipped, unopened; retagged: integrity tags made again, counted over every run since the last master_key.rewrapped event)',
      labelNames: ['table', 'outcome'],
      registers,
    });
    this.integrityFailures = new Counter({
      name: 'writ_integrity_failures_total',
      help: 'Rows refused because their integrity tag does not verify (changed outside Writ), by table: any is a tampering alert',
      labelNames: ['table'],
      registers,
    });
    for (const table of TAGGED_TABLES) this.integrityFailures.inc({ table }, 0);
    this.hostRefusals = new Counter({
      name: 'writ_host_refusals_total',
      help: 'Requests refused for their Host header (WRIT_ALLOWED_HOSTS), by service and reason (not_allowed: 421, malformed: 400)',
      labelNames: ['service', 'reason'],
      registers,
    });
    this.throttleMemoryRefusals = new Counter({
      name: 'writ_throttle_memory_refusals_total',
      help: 'Failed-authentication refusals (429) answered from memory for a source known blocked, by throttle scope',
      labelNames: ['scope'],
      registers,
    });
    for (const scope of THROTTLE_SCOPES) this.throttleMemoryRefusals.inc({ scope }, 0);
    this.throttleFlushFailures = new Counter({
      name: 'writ_throttle_flush_failures_total',
      help: 'Failed writes of the refusals counted in memory to their throttle windows (kept and retried)',
      registers,
    });
    const throttles = this.throttles;
    new Gauge({
      name: 'writ_throttle_blocked_sources',
      // Each worker (WRIT_WORKERS) holds its own: the primary sums them, as instances add up.
      help: 'Sources this process holds in memory as past their failure limit (refused without database work), by throttle scope',
      labelNames: ['scope'],
      registers,
      collect() {
        for (const scope of THROTTLE_SCOPES) {
          let held = 0;
          for (const blocked of throttles) held += blocked().get(scope) ?? 0;
          this.set({ scope }, held);
        }
      },
    });
    this.idempotency = new Counter({
      name: 'writ_admin_idempotency_total',
      help: 'Admin API creates sent with a known Idempotency-Key: replayed (the first answer again) or conflict (422: another request)',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of ['replayed', 'conflict']) this.idempotency.inc({ outcome }, 0);
    this.refreshDeferred = new Counter({
      name: 'writ_account_refresh_deferred_total',
      help: "Calls answered 503 without asking the provider because their connected account's refresh is backing off after a transient failure, by connector",
      labelNames: ['connector'],
      registers,
    });
    this.unrefreshedToken = new Counter({
      name: 'writ_account_token_unrefreshed_total',
      help:
        "Calls sent with their connected account's access token due for its refresh but not expired, because the refresh failed transiently " +
        '(reason failed) or is backing off (reason deferred), by connector',
      labelNames: ['connector', 'reason'],
      registers,
    });
    this.tokenFetchDeferred = new Counter({
      name: 'writ_upstream_token_deferred_total',
      help:
        "Calls answered 503 without asking a client-credentials connector's token endpoint, backing off after a transient failure " +
        '(reason backoff) or heeding its Retry-After (reason retry_after), by connector (per instance)',
      labelNames: ['connector', 'reason'],
      registers,
    });
    this.policyEvaluation = new Histogram({
      name: 'writ_policy_evaluation_seconds',
      help: 'Policy (WASM) evaluation latency',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
      registers,
    });
    // Collected on scrape and kept by the registry: nothing here needs a handle on them.
    new Counter({
      name: 'writ_policy_reload_failures_total',
      help: 'Policy reloads refused (the last good policy stays)',
      registers,
      collect() {
        this.reset();
        this.inc(refusedPolicyReloads);
      },
    });
    this.stopObserving = observePolicyEvaluations((seconds) => this.policyEvaluation.observe(seconds));
    const versionOf = () => this.policyVersion?.();
    new Gauge({
      name: 'writ_policy_info',
      // The same on every worker (WRIT_WORKERS): the primary reports it once, not summed.
      aggregator: 'max',
      help: 'The policy version in force (value 1)',
      labelNames: ['version'],
      registers,
      collect() {
        const version = versionOf();
        if (version === undefined) return;
        this.reset();
        this.set({ version }, 1);
      },
    });
    if (pool) {
      new Gauge({
        name: 'writ_db_pool_connections',
        help: 'Connections of the request pool: total, idle, in_use, and callers waiting for one',
        labelNames: ['state'],
        registers,
        collect() {
          this.set({ state: 'total' }, pool.totalCount);
          this.set({ state: 'idle' }, pool.idleCount);
          this.set({ state: 'in_use' }, pool.totalCount - pool.idleCount);
          this.set({ state: 'waiting' }, pool.waitingCount);
        },
      });
      new Gauge({
        name: 'writ_approvals_pending',
        // The same on every worker (WRIT_WORKERS): the primary reports it once, not summed.
        aggregator: 'max',
        help: 'Approvals waiting for a human (not expired)',
        registers,
        async collect() {
          try {
            // An approval of a task that ended is expired (see ApprovalStore), not waiting for anyone.
            const { rows } = await pool.query<{ n: number }>(
              `SELECT count(*)::int AS n FROM approvals a
                WHERE a.status = 'pending' AND a.expires_at > now()
                  AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = a.task_id AND t.status = 'active' AND t.expires_at > now())`,
            );
            this.set(rows[0]?.n ?? 0);
          } catch {
            // The database is down: the last value stays, readiness says why.
          }
        },
      });
    }
  }

  /** A request answered by an admitted handler. */
  httpAnswered(service: string, method: string, status: number, seconds: number): void {
    this.httpRequests.inc({ service, method, status: String(status) });
    this.httpDuration.observe({ service }, seconds);
  }

  /** A request refused by the in-flight gate. */
  shed(service: string, reason: 'overload' | 'draining'): void {
    this.shedRequests.inc({ service, reason });
  }

  /** A row of `table` was refused: its integrity tag does not verify (`RowIntegrity`). */
  integrityFailed(table: TaggedTable): void {
    this.integrityFailures.inc({ table });
  }

  /** Shows `service`'s Host refusals from 0 (it checks `Host`). */
  checksHosts(service: string): void {
    for (const reason of ['not_allowed', 'malformed'] as const) this.hostRefusals.inc({ service, reason }, 0);
  }

  /** `service` refused a request for its `Host` (the value itself is never a label: it is the caller's). */
  hostRefused(service: string, reason: HostRefusal): void {
    this.hostRefusals.inc({ service, reason });
  }

  /** The failure throttle refused a blocked source from memory. */
  throttleRefusedFromMemory(scope: ThrottleMetricScope): void {
    this.throttleMemoryRefusals.inc({ scope });
  }

  /** The failure throttle could not write its in-memory counts (they are kept for the next flush). */
  throttleFlushFailed(): void {
    this.throttleFlushFailures.inc();
  }

  /**
   * A failure throttle's blocked sources held in memory, per scope, read at every scrape; the
   * returned function stops reading them (the throttle's app closed).
   */
  trackThrottle(blocked: () => ReadonlyMap<string, number>): () => void {
    this.throttles.add(blocked);
    return () => this.throttles.delete(blocked);
  }

  /** An admin create with an `Idempotency-Key` already used: answered again, or refused `422` (another request). */
  idempotentCreate(outcome: 'replayed' | 'conflict'): void {
    this.idempotency.inc({ outcome });
  }

  /**
   * A call was refused (503) without asking the provider: its connected account's refresh is
   * backing off after a transient failure. Counted, not audited (one `connection.refresh_failed`
   * per attempt), once per call where its refusal is final (the gateway may check a call twice).
   * `connectorId` is a connector of the catalogue (the account's), never the caller's text.
   */
  accountRefreshDeferred(connectorId: string): void {
    this.refreshDeferred.inc({ connector: label(connectorId) });
  }

  /**
   * A call was sent with its connected account's access token due for its refresh, not expired,
   * because the refresh failed transiently (`failed`: its `connection.refresh_failed` event says
   * `current_token_used`) or is backing off (`deferred`); once per call, as it is forwarded.
   * `connectorId` is a connector of the catalogue.
   */
  accountTokenUnrefreshed(connectorId: string, reason: 'failed' | 'deferred'): void {
    this.unrefreshedToken.inc({ connector: label(connectorId), reason });
  }

  /**
   * A call was answered 503 without asking its client-credentials connector's token endpoint:
   * this instance backs off after its transient failure (`backoff`), or heeds its `Retry-After`
   * (`retry_after`). `connectorId` is a connector of the catalogue, never the caller's text.
   */
  upstreamTokenDeferred(connectorId: string, reason: 'backoff' | 'retry_after'): void {
    this.tokenFetchDeferred.inc({ connector: label(connectorId), reason });
  }

  /** A policy evaluation took `seconds`. */
  policyEvaluated(seconds: number): void {
    this.policyEvaluation.observe(seconds);
  }

  /** Reports the version of the policy in force, read at every scrape. */
  trackPolicyVersion(version: () => string): void {
    this.policyVersion = version;
  }

  /**
   * The audit checkpoints of this process, read at every scrape: events not yet covered by a
   * signed checkpoint, failed attempts, and the time of the last successful one.
   */
  trackCheckpoints(status: () => { unsignedEvents: number; failures: number; lastSuccessMs: number | undefined }): void {
    const registers = [this.registry];
    new Gauge({
      name: 'writ_audit_unsigned_events',
      help: 'Events this process appended that no signed audit checkpoint covers yet',
      registers,
      collect() {
        this.set(status().unsignedEvents);
      },
    });
    new Counter({
      name: 'writ_audit_checkpoint_failures_total',
      help: 'Audit checkpoint attempts that failed (retried at the next trigger)',
      registers,
      collect() {
        this.reset();
        this.inc(status().failures);
      },
    });
    new Gauge({
      name: 'writ_audit_checkpoint_last_success_timestamp_seconds',
      // Across workers (WRIT_WORKERS): the latest, not a sum of times.
      aggregator: 'max',
      help: 'When an audit checkpoint attempt last succeeded (signed, or found nothing new to sign)',
      registers,
      collect() {
        const at = status().lastSuccessMs;
        if (at !== undefined) this.set(at / 1000);
      },
    });
  }

  /**
   * The master key rotation as this process sees it: how many previous keys are configured
   * (read at every scrape), and what the re-seal this process runs has done so far, per table
   * ({@link masterKeyRewrapProgress}). An operator drops `WRIT_MASTER_KEY_PREVIOUS` once a
   * re-seal ends with nothing skipped or unopened (docs/operations.md).
   */
  trackMasterKey(previousKeys: () => number): void {
    new Gauge({
      name: 'writ_master_key_previous_keys',
      // The same on every worker (WRIT_WORKERS): the primary reports it once, not summed.
      aggregator: 'max',
      help: 'Previous master keys configured (WRIT_MASTER_KEY_PREVIOUS): values sealed under them still open',
      registers: [this.registry],
      collect() {
        this.set(previousKeys());
      },
    });
  }

  /** The re-seal of `table` by this process has, so far, re-sealed, skipped and left unopened these many rows. */
  masterKeyRewrapProgress(table: string, count: { rewrapped: number; skipped: number; unopened: number }): void {
    for (const outcome of ['rewrapped', 'skipped', 'unopened'] as const) this.masterKeyRewrap.set({ table, outcome }, count[outcome]);
  }

  /**
   * The re-tag after a rotation run by this process has made again under the current key these
   * many integrity tags of `table` (outcome `retagged`), counted over every run since the last
   * `master_key.rewrapped` event (a run that died half-way included).
   */
  masterKeyRetagProgress(table: string, retagged: number): void {
    this.masterKeyRewrap.set({ table, outcome: 'retagged' }, retagged);
  }

  /** Stops observing process-wide sources (policy evaluations). */
  close(): void {
    this.stopObserving();
  }

  /** A batch sent as one message committed, or failed an expectation (see `AuditService`). */
  auditOneMessage(committed: boolean): void {
    this.auditOneMessages.inc({ outcome: committed ? 'committed' : 'expectation_failed' });
  }

  /** An audit group commit of `records` took `seconds`; counts what the events say. */
  auditCommitted(records: readonly AuditRecord[], seconds: number): void {
    this.auditCommit.observe(seconds);
    this.auditBatch.observe(records.length);
    for (const record of records) {
      switch (record.type) {
        case 'grant.decision':
          this.exchanges.inc({ outcome: record.outcome, reason: 'policy' });
          break;
        case 'token.refused':
          if (record.data.grant_type === TOKEN_EXCHANGE) this.exchanges.inc({ outcome: 'refused', reason: label(record.data.error) });
          break;
        case 'gateway.call':
          this.gatewayCalls.inc({
            // The connector id of a refusal without a verified token is whatever the caller put
            // in the path: one series per guess would grow /metrics without bound.
            connector: record.agent_id !== null ? label(record.connector_id) : UNVERIFIED,
            operation: label(record.data.operation),
            status: record.outcome === 'success' ? 'forwarded' : label(record.data.status),
          });
          break;
        case 'gateway.upstream':
          if (typeof record.data.upstream_latency_ms === 'number') {
            this.upstreamLatency.observe({ connector: label(record.connector_id) }, record.data.upstream_latency_ms / 1000);
          }
          break;
        default:
          break;
      }
    }
  }

  /**
   * The text exposition. Scrapes that arrive while one is being rendered share it: `/metrics` is
   * never shed, and each rendering queries the pool (pending approvals) and walks every series,
   * so a flood of scrapes costs one rendering at a time, not one each.
   */
  async render(): Promise<{ contentType: string; body: string }> {
    this.rendering ??= (cluster.isWorker ? clusterMetrics() : this.registry.metrics()).finally(() => (this.rendering = undefined));
    return { contentType: this.registry.contentType, body: await this.rendering };
  }

  private rendering: Promise<string> | undefined;
}
