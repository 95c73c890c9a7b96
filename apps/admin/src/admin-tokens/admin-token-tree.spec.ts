import { randomBytes, randomUUID } from 'node:crypto';
import { Pool, PoolClient } from 'pg';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { isInTree, REVOKED_ADMIN_TOKENS_PER_EVENT, revokedEvents, revokeTree } from './admin-token-tree';

/**
 * The tree walk on real PostgreSQL, without the audit chain head's lock that serialises the admin
 * API's audited transactions: a creation and a revocation interleaved by hand, statement by
 * statement, as two instances could if that lock were ever narrowed.
 */
describe('admin token tree: revocation against concurrent creations', () => {
  let db: TestDatabase;
  let pool: Pool;

  /** A token row created by `createdBy`, as the creation inserts it. */
  const insert = async (queryable: Pool | PoolClient, createdBy: string | null): Promise<string> => {
    const id = randomUUID();
    await queryable.query(`INSERT INTO admin_tokens (id, name, role, token_hash, created_by) VALUES ($1, 'tree', 'admin', $2, $3)`, [
      id,
      randomBytes(32).toString('hex'),
      createdBy,
    ]);
    return id;
  };
  const live = async (ids: string[]): Promise<string[]> =>
    (await pool.query<{ id: string }>('SELECT id FROM admin_tokens WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL', [ids])).rows.map((row) => row.id);
  /** Resolves once the backend `pid` waits for a lock. */
  const waitingForLock = async (pid: number): Promise<void> => {
    for (let tries = 0; tries < 200; tries += 1) {
      const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_locks WHERE pid = $1 AND NOT granted', [pid]);
      if (rows[0].n > 0) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error('the walk never waited for the creation');
  };
  const pidOf = async (client: PoolClient) => (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 4 });
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  it('revokes a grandchild committed by a creation that held its creator while the walk began', async () => {
    const parent = await insert(pool, 'system');
    const child = await insert(pool, parent);
    const creator = await pool.connect();
    const revoker = await pool.connect();
    try {
      // The creation made with the child: its creator's row share-locked, as the admin API does.
      await creator.query('BEGIN');
      expect((await creator.query('SELECT 1 FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL FOR SHARE', [child])).rowCount).toBe(1);
      await revoker.query('BEGIN');
      const walker = await pidOf(revoker);
      const walking = revokeTree(revoker, parent);
      // The walk read the tree (parent, child) and waits on the child's row.
      await waitingForLock(walker);
      const grandchild = await insert(creator, child);
      await creator.query('COMMIT');
      const revoked = (await walking).map((row) => row.id);
      await revoker.query('COMMIT');
      expect(revoked).toEqual([parent, child, grandchild]);
      expect(await live([parent, child, grandchild])).toEqual([]);
    } finally {
      creator.release();
      revoker.release();
    }
  });

  it('refuses a creation that asks for its creator once the walk revoked it', async () => {
    const parent = await insert(pool, 'system');
    const child = await insert(pool, parent);
    const creator = await pool.connect();
    const revoker = await pool.connect();
    try {
      await revoker.query('BEGIN');
      expect((await revokeTree(revoker, parent)).map((row) => row.id)).toEqual([parent, child]);
      await creator.query('BEGIN');
      const asker = await pidOf(creator);
      const asking = creator.query('SELECT 1 FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL FOR SHARE', [child]);
      await waitingForLock(asker);
      await revoker.query('COMMIT');
      // The row, read again once the revocation committed, is revoked: the creation makes nothing.
      expect((await asking).rowCount).toBe(0);
      await creator.query('ROLLBACK');
    } finally {
      creator.release();
      revoker.release();
    }
  });

  it('walks through revoked tokens, stops at loops and dangling creators, and tells a revoker inside the tree', async () => {
    const root = await insert(pool, 'system');
    const revokedChild = await insert(pool, root);
    await pool.query('UPDATE admin_tokens SET revoked_at = now() WHERE id = $1', [revokedChild]);
    const underRevoked = await insert(pool, revokedChild);
    const dangling = await insert(pool, randomUUID());
    const looped = await insert(pool, root);
    const loopBack = await insert(pool, looped);
    await pool.query('UPDATE admin_tokens SET created_by = $2 WHERE id = $1', [root, loopBack]);
    const client = await pool.connect();
    try {
      expect(await isInTree(client, underRevoked, root)).toBe(true);
      expect(await isInTree(client, root, underRevoked)).toBe(false);
      expect(await isInTree(client, dangling, root)).toBe(false);
      // A loop by hand: root, looped and loopBack are each other's ancestors, and the walk ends.
      expect(await isInTree(client, root, looped)).toBe(true);
      await client.query('BEGIN');
      const revoked = (await revokeTree(client, root)).map((row) => row.id);
      await client.query('COMMIT');
      expect(revoked.sort()).toEqual([root, underRevoked, looped, loopBack].sort());
      expect(await live([dangling])).toEqual([dangling]);
    } finally {
      client.release();
    }
  });

  it('splits the event of a large tree into parts of at most 500 ids', () => {
    const principal = { id: randomUUID(), name: 'admin', role: 'admin' as const };
    const descendants = Array.from({ length: 1001 }, () => randomUUID());
    const events = revokedEvents(principal, 'root', { root: true, descendants }).map((event) => ({ data: event.data! }));
    expect(events.map((event) => [event.data.part, event.data.parts, (event.data.descendants as string[]).length, event.data.descendant_count])).toEqual([
      [1, 3, REVOKED_ADMIN_TOKENS_PER_EVENT, 1001],
      [2, 3, REVOKED_ADMIN_TOKENS_PER_EVENT, 1001],
      [3, 3, 1, 1001],
    ]);
    expect(events.flatMap((event) => event.data.descendants as string[])).toEqual(descendants);
    expect(revokedEvents(principal, 'root', { root: false, descendants: [] })[0].data).toEqual({
      id: 'root',
      descendants: [],
      descendant_count: 0,
      already_revoked: true,
    });
  });
});
