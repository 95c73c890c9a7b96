/**
 * Single-use memory of client assertion `jti`s, implemented by the server in PostgreSQL
 * (e.g. `INSERT ... ON CONFLICT DO NOTHING` on a primary key `(client_id, jti)`), so that a
 * replay fails on every instance and across restarts.
 */
export interface JtiStore {
  /**
   * Atomically records `(clientId, jti)`. Resolves `true` the first time, `false` if it
   * was already recorded (a replay). The record must be kept at least until `expiresAt`,
   * after which it may be purged: the assertion can no longer be accepted by then.
   * Must reject (not resolve `true`) when the store cannot be reached.
   */
  consume(clientId: string, jti: string, expiresAt: Date): Promise<boolean>;
}
