import { Inject, Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { Repository } from 'typeorm';
import { readFile } from 'node:fs/promises';
import type { Pool } from 'pg';
import type { Logger } from 'pino';
import { AuditService } from '@writ/audit';
import { PG_POOL, PolicyEntity, positionInstantSql, rowOf } from '@writ/database';
import { POLICY_INTEGRITY_COLUMNS, policyIntegrityFieldsOf, type PolicyIntegrityRow, RowIntegrity } from '@writ/grants';
import { TemporarilyUnavailableError } from '@writ/oauth';
import {
  activateStoredPolicy,
  ConflictError,
  deactivateStoredPolicy,
  isPositionInstant,
  loadPolicyEngine,
  LOGGER,
  PolicySync,
  requestTextProblem,
  StoredPolicyInfo,
  ValidationFailedError,
} from '@writ/platform';
import { ActivePolicy, PolicyEngine, PolicyLoadError, probePolicy } from '@writ/policy';
import { AdminPrincipal, adminActor } from '../auth/admin-principal';
import { adminChange } from '../auth/admin-change';
import { decodeCursor, encodeCursor, Page } from '../common/cursor';
import { DEFAULT_PAGE_SIZE, PageQueryDto } from '../common/page-query.dto';

/** A stored policy version as the history lists it. */
export interface StoredPolicyVersion extends StoredPolicyInfo {
  active: boolean;
}

/**
 * Shape check of a history cursor `{at: loaded_at, v: version}`: `at` is the exact instant of the
 * position, to the microsecond (a cursor from before, to the millisecond, is still read), checked
 * as a real date, and `v` text PostgreSQL can compare (no NUL), before either reaches it.
 */
function isHistoryCursor(value: unknown): value is { at: string; v: string } {
  const cursor = value as { at?: unknown; v?: unknown } | null;
  return (
    typeof cursor === 'object' && cursor !== null && isPositionInstant(cursor.at) && typeof cursor.v === 'string' && requestTextProblem(cursor.v) === undefined
  );
}

/** The largest compiled bundle accepted by `PUT /v1/policies/active`. */
export const MAX_POLICY_BUNDLE_BYTES = 8 * 1024 * 1024;

/**
 * Distributes policies through PostgreSQL: a compiled bundle uploaded here, or new policy
 * data over the bundle in force, is loaded first (a bundle that does not load or lacks the
 * entrypoint is refused and nothing changes), then activated for every instance together
 * with its audit event.
 */
@Injectable()
export class PolicyDistributionService {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    @InjectRepository(PolicyEntity) private readonly repository: Repository<PolicyEntity>,
    private readonly audit: AuditService,
    private readonly policy: ActivePolicy,
    private readonly sync: PolicySync,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly integrity: RowIntegrity,
  ) {}

  /** Stored versions, newest first (never the bundle bytes), through the repository. */
  async history(query: PageQueryDto): Promise<Page<StoredPolicyVersion>> {
    const before = decodeCursor(query.cursor, isHistoryCursor);
    const limit = query.limit ?? DEFAULT_PAGE_SIZE;
    // The position is the exact text of loaded_at (a millisecond one would skip the versions
    // stored later within the millisecond of a page's last one), compared on the raw column.
    const found = this.repository
      .createQueryBuilder('policy')
      .select(['policy.version', 'policy.source', 'policy.loadedBy', 'policy.loadedAt', 'policy.active'])
      .addSelect(positionInstantSql('policy.loaded_at'), 'position_at')
      .orderBy('policy.loaded_at', 'DESC')
      .addOrderBy('policy.version', 'DESC')
      .limit(limit + 1);
    if (before) found.where('(policy.loaded_at, policy.version) < (:at::timestamptz, :v)', { at: before.at, v: before.v });
    const { entities, raw } = await found.getRawAndEntities<{ policy_version: string; position_at: string }>();
    const positions = new Map(raw.map((row) => [row.policy_version, row.position_at]));
    const rows = entities.map((policy) => rowOf(policy));
    const items = rows.slice(0, limit);
    const last = items[items.length - 1];
    const lastAt = last ? positions.get(last.version) : undefined;
    return {
      items: items.map((row) => ({
        version: row.version,
        source: row.source,
        loaded_by: row.loaded_by,
        loaded_at: row.loaded_at.toISOString(),
        active: row.active,
      })),
      next_cursor: rows.length > limit && last && lastAt ? encodeCursor({ at: lastAt, v: last.version }) : null,
    };
  }

  /** Activates an uploaded `opa build` bundle (or `.wasm`) for the whole cluster. */
  async activateBundle(admin: AdminPrincipal, bundle: unknown): Promise<StoredPolicyInfo> {
    if (!Buffer.isBuffer(bundle) || bundle.length === 0) {
      throw new ValidationFailedError(
        [{ field: 'body', message: 'send the compiled bundle (opa build output) as application/gzip, or a module as application/wasm' }],
        'the policy upload is invalid',
      );
    }
    const engine = await this.load(() => loadPolicyEngine(bundle, null), 'body', bundle, null);
    return this.activate(admin, engine, bundle, null, 'upload', 'admin.policy.activated');
  }

  /**
   * Activates new policy data (`data` in Rego, replaced whole) over the bundle in force. `409`,
   * changing nothing, when another admin changed the active policy while it was being loaded:
   * activating it anyway would put back the bundle they replaced. `409` too when the active row
   * is not one Writ activated (its integrity tag does not verify): new data over it would tag, and
   * so launder, a bundle a database administrator put there.
   */
  async activateData(admin: AdminPrincipal, data: Record<string, unknown>): Promise<StoredPolicyInfo> {
    const { rows } = await this.pool.query<PolicyIntegrityRow>(`SELECT ${POLICY_INTEGRITY_COLUMNS} FROM policies WHERE active`);
    if (rows[0] && !this.integrity.verifyPolicy(policyIntegrityFieldsOf(rows[0]), rows[0].integrity_tag)) {
      throw new ConflictError(
        'the active stored policy was not activated by Writ (its integrity tag does not verify): upload a bundle or deactivate it, then update the data',
      );
    }
    const bundle: Buffer = rows[0]?.bundle ?? (await this.policyFile());
    const engine = await this.load(() => loadPolicyEngine(bundle, data), 'data', bundle, data);
    return this.activate(admin, engine, bundle, data, 'data update', 'admin.policy.data_updated', rows[0]?.version ?? null);
  }

  /**
   * The bytes of the `WRIT_POLICY` file (no stored policy is active): a file that cannot be read
   * now (removed, being replaced, unreadable) is a `503` with `Retry-After`, logged with its code.
   */
  private async policyFile(): Promise<Buffer> {
    try {
      return await readFile(this.policy.path);
    } catch (error) {
      this.logger.warn({ code: (error as { code?: string }).code, path: this.policy.path }, 'the policy file cannot be read: policy data update refused (503)');
      throw new TemporarilyUnavailableError('the policy file in force cannot be read right now; retry later');
    }
  }

  /** Deactivates the stored policy: every instance returns to its `WRIT_POLICY` file. */
  async deactivate(admin: AdminPrincipal): Promise<boolean> {
    const { result } = await this.audit.recordWith(
      adminChange(admin, (client) => deactivateStoredPolicy(client)),
      (previous) =>
        previous === null
          ? []
          : [{ type: 'admin.policy.deactivated', outcome: 'success' as const, actor: adminActor(admin), data: { previous_version: previous } }],
    );
    await this.sync.sync();
    return result !== null;
  }

  /**
   * Loads a policy about to be put in force, once a worker has seen it load and answer a sample
   * request in time ({@link probePolicy}): this instance, and every other one, runs it on its
   * event loop.
   */
  private async load(load: () => Promise<PolicyEngine>, field: string, bundle: Uint8Array, data: Record<string, unknown> | null): Promise<PolicyEngine> {
    try {
      await probePolicy(bundle, data);
      return await load();
    } catch (error) {
      if (error instanceof PolicyLoadError)
        throw new ValidationFailedError([{ field, message: error.message }], 'the policy was refused; the policy in force is unchanged');
      throw error;
    }
  }

  private async activate(
    admin: AdminPrincipal,
    engine: PolicyEngine,
    bundle: Buffer,
    data: Record<string, unknown> | null,
    source: string,
    eventType: string,
    basedOn?: string | null,
  ): Promise<StoredPolicyInfo> {
    const runningHere = this.policy.current().version; // the file's, when no stored policy was active
    const { result } = await this.audit.recordWith(
      adminChange(admin, (client) => activateStoredPolicy(client, this.integrity, engine, bundle, data, source, `admin:${admin.name}`, basedOn)),
      ({ info, previousVersion }) => [
        {
          type: eventType,
          outcome: 'success',
          actor: adminActor(admin),
          data: {
            version: info.version,
            previous_version: previousVersion ?? runningHere,
            source,
            bundle_bytes: bundle.length,
            ...(data ? { data } : {}),
          },
        },
      ],
    );
    await this.sync.sync();
    return result.info;
  }
}
