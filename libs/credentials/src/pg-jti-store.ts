import { escapeLiteral, type Pool, type QueryResult } from 'pg';
import { watchCheckedOut } from '@writ/database';
import type { JtiStore } from '@writ/oauth';

/**
 * How long past its `expires_at` a used jti is still kept. An instance accepts an assertion (or
 * a DPoP proof) by its own clock, the purge deletes by the database's: without a margin, an
 * instance whose clock runs behind the database's would accept a purged jti again. The same 60 s
 * that DPoP proofs' jtis already keep past their acceptance.
 */
export const JTI_PURGE_MARGIN_SECONDS = 60;

/**
 * Client assertion `jti`s in PostgreSQL: the primary key `(client_id, jti)` makes a replay fail
 * on every instance and across restarts. Expired rows are purged by {@link purgeExpired}.
 *
 * The insert commits with `synchronous_commit` off, so a token request does not wait for a
 * WAL flush of its own just to record the `jti`. This loses nothing that matters: the row is
 * visible to every instance at once, and whatever the assertion is then used for (a token, a
 * refusal, a revocation) is recorded by a later synchronous commit, whose WAL flush covers
 * this earlier record too. Only an assertion whose use left no durable trace can be lost in a
 * crash, and its replay then does no more than the lost request did.
 */
export class PgJtiStore implements JtiStore {
  constructor(private readonly pool: Pool) {}

  /** Records the jti; false when it was already used. */
  async consume(clientId: string, jti: string, expiresAt: Date): Promise<boolean> {
    // One round trip (simple protocol, literals escaped by node-postgres): no parameters here.
    const client = await this.pool.connect();
    const release = watchCheckedOut(client);
    try {
      const results = (await client.query(
        `BEGIN; SET LOCAL synchronous_commit TO OFF;
         INSERT INTO client_assertion_jtis (client_id, jti, expires_at)
         VALUES (${escapeLiteral(clientId)}, ${escapeLiteral(jti)}, ${escapeLiteral(expiresAt.toISOString())}::timestamptz)
         ON CONFLICT DO NOTHING;
         COMMIT`,
      )) as unknown as QueryResult[];
      release();
      return results[2].rowCount === 1;
    } catch (error) {
      // A failed statement leaves the transaction open and aborted: never hand that connection back.
      release(true);
      throw error;
    }
  }

  /** Removes jtis whose assertions can no longer be accepted anyway, by any instance's clock (see {@link JTI_PURGE_MARGIN_SECONDS}). */
  async purgeExpired(): Promise<number> {
    const { rowCount } = await this.pool.query('DELETE FROM client_assertion_jtis WHERE expires_at < now() - make_interval(secs => $1)', [
      JTI_PURGE_MARGIN_SECONDS,
    ]);
    return rowCount ?? 0;
  }
}
