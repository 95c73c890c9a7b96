import { Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import type { Pool } from 'pg';
import type { Logger } from 'pino';
import { AuditService } from '@writ/audit';
import { WRIT_CONFIG, WritConfig } from '@writ/config';
import { destinationOrigin, sealCredential, unsealCredential, unsealLegacyCredential } from '@writ/connectors';
import { PG_POOL } from '@writ/database';
import { MasterKey } from '@writ/keys';
import { LOGGER } from '@writ/platform';

/** How many times one row is read again when it changed between the read and the write. */
const BIND_ATTEMPTS = 3;

interface SealedRow {
  id: string;
  base_url: string;
  credential_sealed: Buffer;
}

/** What {@link CredentialBinding.bindLegacyCredentials} did. */
export interface BindingReport {
  rebound: string[];
  unbound: string[];
}

/**
 * Upstream credentials sealed before they were bound to their destination were bound to the
 * connector id only; a migration cannot re-seal them (it has no master key). At start, the
 * gateway re-seals each such credential bound to its connector's current `base_url` origin
 * (one conditional UPDATE per row, so instances starting together do it once), recording
 * `connector.credential_rebound`. From then on the gateway opens only bound credentials: one
 * that does not open for its row's `base_url` (moved or edited in SQL) is logged here and
 * refused at call time. Also logs the embedded quick start's loopback default.
 */
@Injectable()
export class CredentialBinding implements OnApplicationBootstrap {
  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    private readonly master: MasterKey,
    private readonly audit: AuditService,
    @Inject(WRIT_CONFIG) private readonly config: WritConfig,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  /** Runs {@link bindLegacyCredentials} once the gateway starts. */
  async onApplicationBootstrap(): Promise<void> {
    if (this.config.upstreamLoopbackByDefault) {
      this.logger.warn(
        { networks: this.config.upstreamAllowedNetworks },
        'WRIT_UPSTREAM_ALLOWED_NETWORKS is not set: the embedded quick start lets connectors reach loopback upstreams',
      );
    }
    let report: BindingReport;
    try {
      report = await this.bindLegacyCredentials();
    } catch (error) {
      // Not fatal: a credential left unbound is refused at call time (fail closed); the next start retries.
      this.logger.error({ err: error instanceof Error ? error.message : String(error) }, 'could not bind legacy upstream credentials to their destination');
      return;
    }
    if (report.rebound.length) this.logger.info({ connectors: report.rebound }, 'bound legacy upstream credentials to their destination');
    if (report.unbound.length) {
      this.logger.warn(
        { connectors: report.unbound },
        "upstream credentials that do not open for their connector's base_url (changed outside the admin API?): calls are refused until the credential is set again",
      );
    }
  }

  /** Re-seals legacy credentials bound to their destination; reports those that open under neither binding. */
  async bindLegacyCredentials(): Promise<BindingReport> {
    const { rows } = await this.pool.query<SealedRow>('SELECT id, base_url, credential_sealed FROM connectors WHERE credential_sealed IS NOT NULL ORDER BY id');
    const report: BindingReport = { rebound: [], unbound: [] };
    for (const first of rows) {
      // A row changed between the read and the write (a master key rotation's re-seal, which keeps
      // a legacy value legacy, or a credential set) is read again: it may still need binding.
      let row: SealedRow | undefined = first;
      for (let attempt = 0; row && attempt < BIND_ATTEMPTS; attempt += 1) {
        const outcome = await this.bind(row);
        if (outcome === 'rebound') report.rebound.push(row.id);
        if (outcome === 'unbound') report.unbound.push(row.id);
        if (outcome !== 'changed') break;
        row = (
          await this.pool.query<SealedRow>('SELECT id, base_url, credential_sealed FROM connectors WHERE id = $1 AND credential_sealed IS NOT NULL', [row.id])
        ).rows[0];
      }
    }
    return report;
  }

  /** Binds one row's legacy credential, if it has one, by a conditional UPDATE (`changed`: the row changed meanwhile). */
  private async bind(row: SealedRow): Promise<'bound' | 'rebound' | 'unbound' | 'changed'> {
    if (this.opensBound(row)) return 'bound';
    let plaintext;
    try {
      plaintext = unsealLegacyCredential(this.master, row.id, row.credential_sealed);
    } catch {
      return 'unbound';
    }
    const sealed = sealCredential(this.master, row.id, row.base_url, plaintext);
    const { result } = await this.audit.recordWith(
      async (client) => {
        const updated = await client.query('UPDATE connectors SET credential_sealed = $3 WHERE id = $1 AND credential_sealed = $2 AND base_url = $4', [
          row.id,
          row.credential_sealed,
          sealed.sealed,
          row.base_url,
        ]);
        return (updated.rowCount ?? 0) > 0;
      },
      (done) =>
        done
          ? [
              {
                type: 'connector.credential_rebound',
                outcome: 'success' as const,
                actor: { type: 'system' as const, id: 'gateway' },
                connectorId: row.id,
                data: { origin: destinationOrigin(row.base_url), fingerprint: sealed.fingerprint },
              },
            ]
          : [],
    );
    return result ? 'rebound' : 'changed';
  }

  private opensBound(row: SealedRow): boolean {
    try {
      unsealCredential(this.master, row.id, row.base_url, row.credential_sealed);
      return true;
    } catch {
      return false;
    }
  }
}
