import type { Pool } from 'pg';
import type { JtiStore } from '@writ/oauth';

/**
 * Client assertion `jti`s in PostgreSQL: the primary key `(client_id, jti)` makes a replay fail
 * on every instance and across restarts. Expired rows are purged by {@link purgeExpired}.
 */
export class PgJtiStore implements JtiStore {
  constructor(private readonly pool: Pool) {}

  /** Records the jti; false when it was already used. */
  async consume(clientId: string, jti: string, expiresAt: Date): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      `INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
      [clientId, jti, expiresAt],
    );
    return rowCount === 1;
  }

  /** Removes jtis whose assertions can no longer be accepted anyway. */
  async purgeExpired(): Promise<number> {
    const { rowCount } = await this.pool.query('DELETE FROM client_assertion_jtis WHERE expires_at < now()');
    return rowCount ?? 0;
  }
}
