import { Inject, Injectable, OnApplicationShutdown } from '@nestjs/common';
import { CONNECTOR_CHANGED_CHANNEL, ListenedCache } from '@writ/database';
import type { GatewayConnector } from '@writ/grants';
import { RUNTIME, type Runtime } from '@writ/platform';

/** Most connectors held (a registry is small; the bound only keeps memory finite). */
const MAX_CONNECTORS = 10_000;

/** Longest connector id a notification can name (longer payloads drop every connector). */
const MAX_CONNECTOR_ID_LENGTH = 256;

/**
 * Connectors in memory, so that a call through the gateway does not read its connector
 * (catalogue, base URL, sealed credential) from PostgreSQL. Every instance listens on
 * {@link CONNECTOR_CHANGED_CHANNEL} (the process's {@link Runtime.changes}) and drops a
 * connector as soon as a change to its row is notified. Nothing is held while that connection
 * is down, nor read before a change and stored after its notification (see `ListenedCache`).
 *
 * A notification arrives shortly after the change commits, not before: a call checked against
 * a copy not yet dropped is caught where its use is spent, by the connector `version` the
 * spending statement compares (see `GrantStateRepository.spend`), and checked again.
 */
@Injectable()
export class ConnectorCache implements OnApplicationShutdown {
  private readonly cache: ListenedCache<GatewayConnector>;

  constructor(@Inject(RUNTIME) runtime: Runtime) {
    this.cache = new ListenedCache(runtime.changes, CONNECTOR_CHANGED_CHANNEL, { maxEntries: MAX_CONNECTORS, maxKeyLength: MAX_CONNECTOR_ID_LENGTH });
  }

  /** Stops listening (the runtime's connection serves other apps). */
  onApplicationShutdown(): void {
    this.cache.close();
  }

  /** Whether changes are being listened to (nothing is held otherwise). */
  get listening(): boolean {
    return this.cache.listening;
  }

  /** The connector as last read, if held. */
  get(id: string): GatewayConnector | undefined {
    return this.cache.get(id);
  }

  /** Taken before reading a connector, given back to {@link remember}: a change notified in between discards the read. */
  mark(): number {
    return this.cache.mark();
  }

  /** Holds a connector read after `mark` was taken, unless a change was notified since. */
  remember(connector: GatewayConnector, mark: number): void {
    this.cache.remember(connector.id, connector, mark);
  }

  /** Drops a connector (notified as changed, or found stale where a call was spent). */
  forget(id: string): void {
    this.cache.forget(id);
  }
}
