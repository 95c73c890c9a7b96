import type { Pool } from 'pg';

/**
 * Resolves once some session of the pool's database waits for a lock (a statement queued behind
 * a row a test holds); throws `what` after about 5 s without one.
 */
export async function waitForLockWaiter(pool: Pool, what: string): Promise<void> {
  for (let attempt = 0; attempt < 500; attempt += 1) {
    const { rows } = await pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`,
    );
    if (rows[0].n > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(what);
}
