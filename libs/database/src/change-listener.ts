import { Client, type ClientConfig, type Notification } from 'pg';

/** Told of the changes notified on one channel. */
export interface ChangeSubscriber {
  /** A change was notified (the payload as sent: untrusted, possibly empty or long). */
  changed(payload: string): void;
  /**
   * Notifications may have been missed: the listening connection was lost, or it is listening
   * again after a loss (or for the first time). Whatever was read before must be read again.
   */
  reset(): void;
}

/** Options of {@link ChangeListener}. */
export interface ChangeListenerOptions {
  /** Where to connect (a dedicated connection is opened with this, TCP keep-alive on). */
  connection: ClientConfig;
  /** Told when the connection cannot be opened or is lost (it is opened again). */
  onLost?: (error: string | undefined) => void;
  /** First delay before connecting again after a loss; doubled on each failure. */
  minBackoffMs?: number;
  /** Longest delay between two attempts. */
  maxBackoffMs?: number;
  /**
   * How often the connection is checked with a `SELECT 1` (default 5000 ms). A connection that a
   * NAT, a firewall or a frozen host dropped without a word never reports an error by itself: it
   * would look listening for ever while no notification arrives. A check that fails, or gets no
   * answer within the same time, counts as a loss. The checks also keep idle NAT mappings alive.
   */
  heartbeatMs?: number;
}

/** A PostgreSQL channel name as Writ's triggers use them (LISTEN takes an identifier, not a parameter). */
const CHANNEL = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * One connection per process that LISTENs on the channels Writ's triggers notify (a client
 * registration, a connector, a signing key, the active policy changed) and tells each channel's
 * subscribers. While that connection is down nothing can be known to be current: subscribers
 * are reset when it is lost and again when it listens anew, and {@link listening} says false
 * meanwhile, so that caches hold nothing and every read goes to PostgreSQL. The connection is
 * opened again with exponential backoff.
 */
export class ChangeListener {
  private readonly subscribers = new Map<string, Set<ChangeSubscriber>>();
  /** Channels LISTENed to on the current connection. */
  private readonly listened = new Set<string>();
  private client: Client | undefined;
  private retry: NodeJS.Timeout | undefined;
  private backoffMs: number;
  private started = false;
  private stopped = false;
  private connecting: Promise<void> | undefined;
  /** The LISTEN statements sent after the connection was opened, one after the other. */
  private pendingListens: Promise<void> = Promise.resolve();
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(private readonly options: ChangeListenerOptions) {
    this.backoffMs = options.minBackoffMs ?? 250;
  }

  /** Whether changes on this channel are being listened to now (hold nothing otherwise). */
  listening(channel: string): boolean {
    return this.client !== undefined && this.listened.has(channel);
  }

  /** Tells `subscriber` of the changes on `channel` from now on; returns the unsubscription. */
  subscribe(channel: string, subscriber: ChangeSubscriber): () => void {
    if (!CHANNEL.test(channel)) throw new Error(`not a channel name: ${channel}`);
    let set = this.subscribers.get(channel);
    if (!set) {
      set = new Set();
      this.subscribers.set(channel, set);
      // A channel added while connected: listened to on the connection that exists.
      const client = this.client;
      if (client) this.listenLater(client, channel);
    }
    set.add(subscriber);
    return () => {
      set.delete(subscriber);
    };
  }

  /** Opens the connection and listens; never throws (a failure is retried with backoff). */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.connect();
  }

  /** Closes the connection; nothing is listened to any more. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    clearInterval(this.heartbeat);
    await this.connecting?.catch(() => undefined);
    const client = this.client;
    this.drop();
    await client?.end().catch(() => undefined);
  }

  private connect(): Promise<void> {
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    // TCP keep-alive: a connection dropped silently on the way would otherwise never say so.
    const client = new Client({ ...this.options.connection, keepAlive: true });
    client.on('error', (error: Error) => this.lost(client, error.message));
    client.on('end', () => this.lost(client, undefined));
    client.on('notification', (message: Notification) => this.notified(client, message));
    const listened: string[] = [];
    try {
      await client.connect();
      for (const channel of [...this.subscribers.keys()]) {
        await client.query(this.timed(`LISTEN ${channel}`));
        listened.push(channel);
      }
    } catch (error) {
      await client.end().catch(() => undefined);
      this.options.onLost?.(error instanceof Error ? error.message : String(error));
      this.scheduleConnect();
      return;
    }
    if (this.stopped) {
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    this.heartbeat ??= setInterval(() => this.beat(), this.options.heartbeatMs ?? 5000);
    this.heartbeat.unref();
    for (const channel of listened) this.listened.add(channel);
    this.backoffMs = this.options.minBackoffMs ?? 250;
    // Changes committed while nobody listened were missed: everything is read again.
    this.resetAll();
    // Channels subscribed to while the connection was being opened.
    for (const channel of this.subscribers.keys()) if (!this.listened.has(channel)) this.listenLater(client, channel);
  }

  /** Checks the connection (see {@link ChangeListenerOptions.heartbeatMs}), after the statements queued before. */
  private beat(): void {
    const client = this.client;
    if (!client) return;
    this.pendingListens = this.pendingListens.then(async () => {
      if (this.client !== client) return;
      try {
        await client.query(this.timed('SELECT 1'));
      } catch (error) {
        this.lost(client, error instanceof Error ? error.message : String(error));
      }
    });
  }

  /**
   * A statement on the listening connection, answered within the heartbeat's time or counted as a
   * loss: a statement that waits for ever (the connection frozen on the way) would hold back
   * every heartbeat queued after it, and the connection would look listening for ever.
   */
  private timed(text: string): { text: string } {
    // `query_timeout` per query is honoured by pg, not declared by its types.
    return { text, query_timeout: this.options.heartbeatMs ?? 5000 } as { text: string };
  }

  /** One query at a time on the connection (`pg` deprecates overlapping queries on a client). */
  private listenLater(client: Client, channel: string): void {
    this.pendingListens = this.pendingListens.then(() => this.listenOn(client, channel));
  }

  private async listenOn(client: Client, channel: string): Promise<void> {
    if (this.client !== client) return;
    try {
      await client.query(this.timed(`LISTEN ${channel}`));
      if (this.client === client) {
        this.listened.add(channel);
        this.reset(channel);
      }
    } catch (error) {
      this.lost(client, error instanceof Error ? error.message : String(error));
    }
  }

  private notified(client: Client, message: Notification): void {
    if (client !== this.client) return;
    for (const subscriber of this.subscribers.get(message.channel) ?? []) subscriber.changed(message.payload ?? '');
  }

  private lost(client: Client, error: string | undefined): void {
    if (this.client !== client) return;
    this.drop();
    client.end().catch(() => undefined);
    if (this.stopped) return;
    this.options.onLost?.(error);
    this.scheduleConnect();
  }

  /** Nothing held may have missed a notification: every subscriber starts over. */
  private drop(): void {
    this.client = undefined;
    this.listened.clear();
    this.resetAll();
  }

  private resetAll(): void {
    for (const channel of this.subscribers.keys()) this.reset(channel);
  }

  private reset(channel: string): void {
    for (const subscriber of this.subscribers.get(channel) ?? []) subscriber.reset();
  }

  private scheduleConnect(): void {
    if (this.stopped || this.retry) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(delay * 2, this.options.maxBackoffMs ?? 10_000);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      void this.connect();
    }, delay);
    this.retry.unref();
  }
}

/** Options of {@link ListenedCache}. */
export interface ListenedCacheOptions {
  /** Most entries held (the whole cache is dropped past it: the bound only keeps memory finite). */
  maxEntries: number;
  /** Longest key a notification may name; a longer (or empty) payload drops everything. */
  maxKeyLength: number;
}

/**
 * Rows in memory, dropped when their change is notified on `channel` (the payload names the
 * row's key). Holds nothing while the channel is not listened to, and never stores a row read
 * before a notification that arrived while it was being read: a read takes a {@link mark}
 * first and gives it back to {@link remember}. A payload that is no key (empty, too long)
 * drops every entry.
 */
export class ListenedCache<V> implements ChangeSubscriber {
  private readonly entries = new Map<string, V>();
  /** Moved on by every notification and every reset. */
  private generation = 0;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly listener: ChangeListener,
    private readonly channel: string,
    private readonly options: ListenedCacheOptions,
  ) {
    this.unsubscribe = listener.subscribe(channel, this);
  }

  /** Stops listening and holds nothing any more. */
  close(): void {
    this.unsubscribe();
    this.closed = true;
    this.reset();
  }

  private closed = false;

  /** Whether changes are being listened to (nothing is held otherwise). */
  get listening(): boolean {
    return !this.closed && this.listener.listening(this.channel);
  }

  /** The entry as last read, if held. */
  get(key: string): V | undefined {
    return this.listening ? this.entries.get(key) : undefined;
  }

  /** Taken before reading an entry, given back to {@link remember}. */
  mark(): number {
    return this.generation;
  }

  /** Holds an entry read after `mark` was taken, unless a change was notified since. */
  remember(key: string, value: V, mark: number): void {
    if (mark !== this.generation || !this.listening) return;
    if (!this.entries.has(key) && this.entries.size >= this.options.maxEntries) this.entries.clear();
    this.entries.set(key, value);
  }

  /** Drops an entry (notified as changed, or found stale where it was used). */
  forget(key: string): void {
    this.generation += 1;
    this.entries.delete(key);
  }

  /** How many entries are held. */
  get size(): number {
    return this.entries.size;
  }

  /** {@link ChangeSubscriber}: the named entry goes; a payload that names none drops all. */
  changed(payload: string): void {
    if (payload.length === 0 || payload.length > this.options.maxKeyLength) this.reset();
    else this.forget(payload);
  }

  /** {@link ChangeSubscriber}: everything goes. */
  reset(): void {
    this.generation += 1;
    this.entries.clear();
  }
}
