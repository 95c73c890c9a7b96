import { randomUUID } from 'node:crypto';
import { Pool, PoolClient } from 'pg';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { GrantStore, ReserveOutcome } from './grant-store';

/**
 * The store's operations against a real PostgreSQL, in concurrent transactions on separate
 * connections that share no other lock (no audit chain head): each check-then-act must be
 * atomic by itself.
 */
describe('GrantStore', () => {
  let db: TestDatabase;
  let pool: Pool;
  let store: GrantStore;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 24 });
    store = new GrantStore(pool);
    await pool.query(`INSERT INTO agents (id, name, status, jwks) VALUES ('agent-s', 'agent-s', 'active', '{"keys":[]}')`);
    await pool.query(`INSERT INTO orchestrators (id, name, jwks, allowed_agents) VALUES ('orch-s', 'orch-s', '{"keys":[]}', '{*}')`);
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  const newTask = async () => {
    const id = randomUUID();
    await pool.query(
      `INSERT INTO tasks (id, agent_id, orchestrator_id, purpose, allowed, metadata, status, task_token_jti, created_at, expires_at)
       VALUES ($1, 'agent-s', 'orch-s', 'spec', '[]', '{}', 'active', $2, now(), now() + interval '1 hour')`,
      [id, randomUUID()],
    );
    return id;
  };
  /** Runs `work` in its own transaction on its own connection, committing after it. */
  const inTransaction = async <T>(work: (tx: PoolClient) => Promise<T>): Promise<T> => {
    const tx = await pool.connect();
    try {
      await tx.query('BEGIN');
      const result = await work(tx);
      await tx.query('COMMIT');
      return result;
    } catch (error) {
      await tx.query('ROLLBACK');
      throw error;
    } finally {
      tx.release();
    }
  };
  const used = async (taskId: string) =>
    Object.fromEntries(
      (await pool.query(`SELECT rule, used::float8 AS used FROM task_budgets WHERE task_id = $1`, [taskId])).rows.map((row) => [row.rule, row.used]),
    );

  it('counts 20 concurrent refusals one after another: each sees a distinct fresh count', async () => {
    const taskId = await newTask();
    const counts = await Promise.all(Array.from({ length: 20 }, () => inTransaction((tx) => store.recordRefusal(tx, taskId, true))));
    expect(counts.map((count) => count!.outOfPurposeRequests).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it('ends a task once when ends race', async () => {
    const taskId = await newTask();
    const ends = await Promise.all(
      ['revoked', 'completed', 'failed', 'expired'].map((status) => inTransaction((tx) => store.endTask(tx, taskId, status as 'revoked', 'race'))),
    );
    expect(ends.filter(Boolean)).toHaveLength(1);
  });

  it('reserves exactly within the limit from 20 concurrent transactions, all or nothing', async () => {
    const taskId = await newTask();
    await inTransaction((tx) =>
      store.declareBudgets(tx, taskId, [
        { entry: 0, rule: 'calls', maximum: 10 },
        { entry: 0, rule: 'sum:amount_max', maximum: 90000 },
      ]),
    );
    const outcomes: ReserveOutcome[] = await Promise.all(
      Array.from({ length: 20 }, () => inTransaction((tx) => store.reserveBudget(tx, taskId, [0], { amount_max: 30000 }))),
    );
    expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(3);
    for (const outcome of outcomes.filter((outcome) => !outcome.ok)) expect(outcome).toMatchObject({ rule: 'limit:sum:amount_max', entry: 0 });
    // The refused reservations did not take a call either.
    expect(await used(taskId)).toEqual({ calls: 3, 'sum:amount_max': 90000 });
  });

  it('refuses a missing or negative summed value, and releases a reservation', async () => {
    const taskId = await newTask();
    await inTransaction((tx) =>
      store.declareBudgets(tx, taskId, [
        { entry: 1, rule: 'calls', maximum: 5 },
        { entry: 1, rule: 'sum:amount_max', maximum: 100 },
      ]),
    );
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], {}))).toMatchObject({ ok: false, rule: 'limit:sum:amount_max' });
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], { amount_max: -1 }))).toMatchObject({ ok: false, rule: 'limit:sum:amount_max' });
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], { amount_max: '50' }))).toMatchObject({ ok: false });
    const held = await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], { amount_max: 60.5 }));
    expect(held).toMatchObject({ ok: true });
    expect(await used(taskId)).toEqual({ calls: 1, 'sum:amount_max': 60.5 });
    if (held.ok) await inTransaction((tx) => store.releaseBudget(tx, held.reservation));
    expect(await used(taskId)).toEqual({ calls: 0, 'sum:amount_max': 0 });
    expect(await store.budgetsOf(taskId)).toEqual([
      { entry: 1, calls: { limit: 5, used: 0, remaining: 5 }, sum: { amount_max: { limit: 100, used: 0, remaining: 100 } } },
    ]);
  });

  it('refuses a reservation on entries without budget rows (fail closed)', async () => {
    const taskId = await newTask();
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [0], {}))).toMatchObject({ ok: false, rule: 'limit:calls' });
  });
});
