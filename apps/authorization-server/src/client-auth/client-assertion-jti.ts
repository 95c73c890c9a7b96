import { clientAuthenticationFailed, type JtiStore } from '@writ/oauth';

/** The `jti` row an issuing batch inserts with a credential (see `connectorCredentials`). */
export interface ClaimedJti {
  clientId: string;
  jti: string;
  expiresAt: Date;
}

/**
 * The `jti` of a verified client assertion whose consumption is deferred to the transaction
 * that issues the token (one transaction per batch instead of one more per request). It is
 * spent exactly once, before anything the request does is recorded:
 *
 * - with the credential, in the issuing batch ({@link claim}, then {@link settle}): the insert
 *   `ON CONFLICT DO NOTHING` in the same statement as the credential's row makes a replay, in
 *   parallel on any instance, record no credential (the second insert waits for the first
 *   transaction and then finds the row);
 * - otherwise by {@link consume}, in its own transaction, before a refusal, an approval request
 *   or any other recorded outcome, and before any error is answered: a replayed assertion never
 *   moves a task's refusal counters, never requests an approval, never gets more than a replay.
 */
export class ClientAssertionJti {
  private state: 'pending' | 'claimed' | 'spent' = 'pending';

  constructor(
    private readonly claimed: ClaimedJti,
    private readonly store: JtiStore,
  ) {}

  /** True until the jti is spent or handed to an issuing batch. */
  get pending(): boolean {
    return this.state === 'pending';
  }

  /** Spends the jti now (idempotent); throws `invalid_client` (`assertion_replay`) for a replay. */
  async consume(): Promise<void> {
    if (this.state === 'spent') return;
    if (this.state === 'claimed') throw new Error('the client assertion jti is being spent by an issuing batch');
    const first = await this.store.consume(this.claimed.clientId, this.claimed.jti, this.claimed.expiresAt);
    if (!first) throw clientAuthenticationFailed('assertion_replay');
    this.state = 'spent';
  }

  /** The row for the issuing batch, or undefined when it was already spent. */
  claim(): ClaimedJti | undefined {
    if (this.state === 'spent') return undefined;
    if (this.state === 'claimed') throw new Error('the client assertion jti is already claimed');
    this.state = 'claimed';
    return this.claimed;
  }

  /**
   * What the issuing batch did with a claimed jti: spent it (whatever became of the credential),
   * or found it already used (`replayed`: throws `assertion_replay`); `failed` (the batch did not
   * commit) makes it pending again.
   */
  settle(outcome: 'spent' | 'replayed' | 'failed'): void {
    if (this.state !== 'claimed') return;
    this.state = outcome === 'failed' ? 'pending' : 'spent';
    if (outcome === 'replayed') throw clientAuthenticationFailed('assertion_replay');
  }
}
