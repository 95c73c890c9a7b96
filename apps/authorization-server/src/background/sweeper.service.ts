import { Inject, Injectable, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import type { Logger } from 'pino';
import { ConnectedAccounts } from '@writ/accounts';
import { CredentialRevoker } from '@writ/grants';
import { LOGGER } from '@writ/platform';
import { ClientAuthenticator } from '../client-auth/client-authenticator.service';

const TASK_SWEEP_MS = 5_000;
const JTI_PURGE_MS = 60_000;

/**
 * Background upkeep of the authorization server: tasks past their deadline become `expired`
 * (their credentials revoked), and used assertion jtis past retention are purged. Deadlines
 * are also checked on every use, so the sweep only bounds how long a stale `active` shows.
 */
@Injectable()
export class SweeperService implements OnApplicationBootstrap, OnApplicationShutdown {
  private timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly revoker: CredentialRevoker,
    private readonly clients: ClientAuthenticator,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly accounts: ConnectedAccounts,
  ) {}

  /** Starts the timers. */
  onApplicationBootstrap(): void {
    this.every(TASK_SWEEP_MS, async () => {
      const expired = await this.revoker.expireDueTasks();
      if (expired) this.logger.info({ expired }, 'expired tasks past their deadline');
    });
    this.every(JTI_PURGE_MS, () => this.clients.purgeExpiredJtis());
    this.every(JTI_PURGE_MS, () => this.accounts.purgeExpiredLinks());
  }

  /** Stops the timers. */
  onApplicationShutdown(): void {
    this.timers.forEach(clearInterval);
    this.timers = [];
  }

  private every(ms: number, job: () => Promise<unknown>): void {
    let running = false;
    const timer = setInterval(() => {
      if (running) return;
      running = true;
      job()
        .catch((error: unknown) => this.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'background job failed; will retry'))
        .finally(() => {
          running = false;
        });
    }, ms);
    timer.unref();
    this.timers.push(timer);
  }
}
