import { Inject, Injectable, OnApplicationBootstrap, OnApplicationShutdown } from '@nestjs/common';
import { Client, type Notification, type Pool } from 'pg';
import type { Logger } from 'pino';
import { PG_POOL } from '@writ/database';
import type { GatewayConnector } from '@writ/grants';
import { LOGGER } from '@writ/platform';

/** The channel the `connectors` trigger notifies on every update or delete (payload: the connector id). */
export const CONNECTOR_CHANGED_CHANNEL = 'writ_connector_changed';

/** Delay before listening again after the listening connection was lost. */
const RELISTEN_MS = 1_000;

/** Most connectors held (a registry is small; the bound only keeps memory finite). */
const MAX_CONNECTORS = 10_000;

/**
 * Connectors in memory, so that a call through the gateway does not read its connector
 * (catalogue, base URL, sealed credential) from PostgreSQL. Every instance listens on
 * {@link CONNECTOR_CHANGED_CHANNEL} on a connection of its own and drops a connector as soon
 * as a change to its row is notified. Nothing is held while that connection is down (it is
 * opened again), nor read before a change and stored after its notification.
 *
 * A notification arrives shortly after the change commits, not before: a call checked against
 * a copy not yet dropped is caught where its use is spent, by the connector `version` the
 * spending statement compares (see `GrantStateRepository.spend`), and checked again.
 */
@Injectable()
export class ConnectorCache implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly connectors = new Map<string, GatewayConnector>();
  private listener: Client | undefined;
  /** Moved on by every notification and every loss of the listener. */
  private generation = 0;
  private relisten: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    @Inject(PG_POOL) private readonly pool: Pool,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  /** Whether changes are being listened to (nothing is held otherwise). */
  get listening(): boolean {
    return this.listener !== undefined;
  }

  /** The connector as last read, if held. */
  get(id: string): GatewayConnector | undefined {
    return this.listener ? this.connectors.get(id) : undefined;
  }

  /** Taken before reading a connector, given back to {@link remember}: a change notified in between discards the read. */
  mark(): number {
    return this.generation;
  }

  /** Holds a connector read after `mark` was taken, unless a change was notified since. */
  remember(connector: GatewayConnector, mark: number): void {
    if (!this.listener || mark !== this.generation) return;
    if (!this.connectors.has(connector.id) && this.connectors.size >= MAX_CONNECTORS) this.connectors.clear();
    this.connectors.set(connector.id, connector);
  }

  /** Drops a connector (notified as changed, or found stale where a call was spent). */
  forget(id: string): void {
    this.generation += 1;
    this.connectors.delete(id);
  }

  /** Starts listening; the gateway starts without the cache if the database refuses (and tries again). */
  async onApplicationBootstrap(): Promise<void> {
    await this.listen();
  }

  /** Stops listening. */
  async onApplicationShutdown(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.relisten);
    const listener = this.listener;
    this.drop();
    await listener?.end().catch(() => undefined);
  }

  private async listen(): Promise<void> {
    if (this.stopped) return;
    // TCP keep-alive: a connection dropped silently on the way would otherwise never say so.
    const client = new Client({ ...this.pool.options, keepAlive: true });
    client.on('error', (error: Error) => this.lost(client, error));
    client.on('end', () => this.lost(client));
    client.on('notification', (message: Notification) => {
      if (message.channel === CONNECTOR_CHANGED_CHANNEL && message.payload !== undefined) this.forget(message.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CONNECTOR_CHANGED_CHANNEL}`);
    } catch (error) {
      this.logger.warn(
        { err: error instanceof Error ? error.message : String(error) },
        'cannot listen for connector changes: connectors are read on every call',
      );
      await client.end().catch(() => undefined);
      this.scheduleListen();
      return;
    }
    if (this.stopped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.generation += 1;
    this.listener = client;
  }

  private lost(client: Client, error?: Error): void {
    if (this.listener !== client) return;
    this.drop();
    if (this.stopped) return;
    this.logger.warn({ err: error?.message }, 'lost the connection listening for connector changes: connectors are read on every call until it is back');
    client.end().catch(() => undefined);
    this.scheduleListen();
  }

  /** Nothing held may have missed a notification: everything goes. */
  private drop(): void {
    this.listener = undefined;
    this.generation += 1;
    this.connectors.clear();
  }

  private scheduleListen(): void {
    if (this.stopped || this.relisten) return;
    this.relisten = setTimeout(() => {
      this.relisten = undefined;
      void this.listen();
    }, RELISTEN_MS);
    this.relisten.unref();
  }
}
