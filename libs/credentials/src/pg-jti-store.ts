import { escapeLiteral, type Pool, type QueryResult } from 'pg';
import { watchCheckedOut } from '@writ/database';
import type { JtiStore } from '@writ/oauth';

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

  /** Removes jtis whose assertions can no longer be accepted anyway. */
  async purgeExpired(): Promise<number> {
    const { rowCount } = await this.pool.query('DELETE FROM client_assertion_jtis WHERE expires_at < now()');
    return rowCount ?? 0;
  }
}
