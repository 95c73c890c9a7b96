import { Pool, PoolClient } from 'pg';
import { createTestDatabase, insertAgentRow, insertOrchestratorRow, insertTaskRow, TestDatabase, testRowIntegrity, waitForLockWaiter } from '@writ/testing';
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
  const integrity = testRowIntegrity();

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 24 });
    store = new GrantStore(pool, integrity);
    await insertAgentRow(pool, integrity, { id: 'agent-s', jwks: { keys: [] } });
    await insertOrchestratorRow(pool, integrity, { id: 'orch-s', jwks: { keys: [] }, allowedAgents: ['*'] });
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  const newTask = () => insertTaskRow(pool, integrity, { agentId: 'agent-s', orchestratorId: 'orch-s' });
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
    const declared = [
      { entry: 0, rule: 'calls', maximum: 10 },
      { entry: 0, rule: 'sum:amount_max', maximum: 90000 },
    ];
    await inTransaction((tx) => store.declareBudgets(tx, taskId, declared));
    const outcomes: ReserveOutcome[] = await Promise.all(
      Array.from({ length: 20 }, () => inTransaction((tx) => store.reserveBudget(tx, taskId, [0], { amount_max: 30000 }, declared))),
    );
    expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(3);
    for (const outcome of outcomes.filter((outcome) => !outcome.ok)) expect(outcome).toMatchObject({ rule: 'limit:sum:amount_max', entry: 0 });
    // The refused reservations did not take a call either.
    expect(await used(taskId)).toEqual({ calls: 3, 'sum:amount_max': 90000 });
  });

  it('refuses a missing or negative summed value, and releases a reservation', async () => {
    const taskId = await newTask();
    const declared = [
      { entry: 1, rule: 'calls', maximum: 5 },
      { entry: 1, rule: 'sum:amount_max', maximum: 100 },
    ];
    await inTransaction((tx) => store.declareBudgets(tx, taskId, declared));
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], {}, declared))).toMatchObject({ ok: false, rule: 'limit:sum:amount_max' });
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], { amount_max: -1 }, declared))).toMatchObject({
      ok: false,
      rule: 'limit:sum:amount_max',
    });
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], { amount_max: '50' }, declared))).toMatchObject({ ok: false });
    const held = await inTransaction((tx) => store.reserveBudget(tx, taskId, [1], { amount_max: 60.5 }, declared));
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
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [0], {}, []))).toMatchObject({ ok: false, rule: 'limit:calls' });
  });

  it('bounds a budget row raised by hand by the declared limit, in the reserving statement', async () => {
    const taskId = await newTask();
    const declared = [
      { entry: 0, rule: 'calls', maximum: 2 },
      { entry: 0, rule: 'sum:amount_max', maximum: 100 },
    ];
    await inTransaction((tx) => store.declareBudgets(tx, taskId, declared));
    // A database administrator raises both maxima (the rows are not tagged).
    await pool.query(`UPDATE task_budgets SET maximum = 1000000 WHERE task_id = $1`, [taskId]);
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, () => inTransaction((tx) => store.reserveBudget(tx, taskId, [0], { amount_max: 40 }, declared))),
    );
    expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(2);
    expect(outcomes.find((outcome) => !outcome.ok)).toMatchObject({ ok: false, rule: 'limit:calls', description: expect.stringContaining('(2)') });
    expect(await used(taskId)).toEqual({ calls: 2, 'sum:amount_max': 80 });
    // What the policy sees at the exchange is bounded the same way.
    expect(await store.budgetsOf(taskId, declared)).toEqual([
      { entry: 0, calls: { limit: 2, used: 2, remaining: 0 }, sum: { amount_max: { limit: 100, used: 80, remaining: 20 } } },
    ]);
  });

  it('counts a budget used below zero by hand (its CHECK dropped) as unused: the declared limit holds', async () => {
    const taskId = await newTask();
    const declared = [
      { entry: 0, rule: 'calls', maximum: 2 },
      { entry: 0, rule: 'sum:amount_max', maximum: 100 },
    ];
    await inTransaction((tx) => store.declareBudgets(tx, taskId, declared));
    // A database superuser lowers the untagged counters instead of raising the bounded maxima.
    await pool.query('ALTER TABLE task_budgets DROP CONSTRAINT IF EXISTS task_budgets_used_check');
    await pool.query(`UPDATE task_budgets SET used = -1000000 WHERE task_id = $1`, [taskId]);
    expect(await store.budgetsOf(taskId, declared)).toEqual([
      { entry: 0, calls: { limit: 2, used: 0, remaining: 2 }, sum: { amount_max: { limit: 100, used: 0, remaining: 100 } } },
    ]);
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, () => inTransaction((tx) => store.reserveBudget(tx, taskId, [0], { amount_max: 40 }, declared))),
    );
    expect(outcomes.filter((outcome) => outcome.ok)).toHaveLength(2);
    expect(outcomes.find((outcome) => !outcome.ok)).toMatchObject({ ok: false, rule: 'limit:calls' });
    expect(await used(taskId)).toEqual({ calls: 2, 'sum:amount_max': 80 });
  });

  it('refuses a reservation when a declared budget row was deleted by hand', async () => {
    const taskId = await newTask();
    const declared = [
      { entry: 0, rule: 'calls', maximum: 1 },
      { entry: 0, rule: 'sum:amount_max', maximum: 100 },
    ];
    await inTransaction((tx) => store.declareBudgets(tx, taskId, declared));
    await pool.query(`DELETE FROM task_budgets WHERE task_id = $1 AND rule = 'calls'`, [taskId]);
    expect(await inTransaction((tx) => store.reserveBudget(tx, taskId, [0], { amount_max: 1 }, declared))).toMatchObject({ ok: false });
    expect(await used(taskId)).toEqual({ 'sum:amount_max': 0 });
  });

  describe('declarer standing', () => {
    /** An orchestrator `orch-<name>` serving `agent-<name>`, with a live Tasks API token `jti-<name>`. */
    const declarer = async (name: string) => {
      const ids = { orchestrator: `orch-${name}`, agent: `agent-${name}`, jti: `jti-${name}` };
      await insertAgentRow(pool, integrity, { id: ids.agent, jwks: { keys: [] } });
      await insertOrchestratorRow(pool, integrity, { id: ids.orchestrator, jwks: { keys: [] }, allowedAgents: [ids.agent] });
      await pool.query(
        `INSERT INTO access_tokens (jti, kind, client_id, subject, scope, issued_at, expires_at)
         VALUES ($1, 'tasks', $2, $2, 'tasks', now(), now() + interval '5 minutes')`,
        [ids.jti, ids.orchestrator],
      );
      return ids;
    };
    const standing = (tx: PoolClient, ids: { orchestrator: string; agent: string; jti: string }) =>
      store.declarerStanding(tx, ids.orchestrator, ids.jti, ids.agent);
    /** A transaction left open on its own connection. */
    const begin = async () => {
      const tx = await pool.connect();
      await tx.query('BEGIN');
      return {
        tx,
        end: async (how: 'COMMIT' | 'ROLLBACK') => {
          await tx.query(how);
          tx.release();
        },
      };
    };
    type Change = (tx: PoolClient, ids: { orchestrator: string; agent: string; jti: string }) => Promise<unknown>;
    /** An orchestrator's change as the admin API writes it: tagged again. */
    const setOrchestrator = (tx: PoolClient, id: string, status: 'active' | 'suspended', allowedAgents: string[]) =>
      tx.query(`UPDATE orchestrators SET status = $2, allowed_agents = $3, integrity_tag = $4 WHERE id = $1`, [
        id,
        status,
        allowedAgents,
        integrity.tagClient('orchestrators', { id, status, jwks: { keys: [] }, allowedAgents }),
      ]);
    const suspendOrchestrator: Change = async (tx, ids) => {
      await setOrchestrator(tx, ids.orchestrator, 'suspended', [ids.agent]);
      await store.revokeTasksTokensOf(tx, ids.orchestrator, 'orchestrator suspended');
    };
    const changes: Array<[string, Change, Record<string, unknown>]> = [
      ['the orchestrator is suspended', suspendOrchestrator, { orchestratorStatus: 'suspended', token: 'revoked' }],
      [
        'the orchestrator is deleted',
        async (tx, ids) => {
          await store.revokeTasksTokensOf(tx, ids.orchestrator, 'orchestrator deleted');
          await tx.query(`DELETE FROM orchestrators WHERE id = $1`, [ids.orchestrator]);
        },
        { orchestratorStatus: null, allowedAgents: [], token: 'revoked' },
      ],
      ['the agent leaves allowed_agents', (tx, ids) => setOrchestrator(tx, ids.orchestrator, 'active', []), { allowedAgents: [] }],
      ['the token is revoked', (tx, ids) => store.revokeCredential(tx, ids.jti, 'RFC 7009'), { token: 'revoked' }],
      [
        'the agent is suspended',
        (tx, ids) =>
          tx.query(`UPDATE agents SET status = 'suspended', integrity_tag = $2 WHERE id = $1`, [
            ids.agent,
            integrity.tagClient('agents', { id: ids.agent, status: 'suspended', jwks: { keys: [] } }),
          ]),
        { agentStatus: 'suspended' },
      ],
      ['the agent is deleted', (tx, ids) => tx.query(`DELETE FROM agents WHERE id = $1`, [ids.agent]), { agentStatus: null }],
    ];

    it('reads everything a declaration was allowed on', async () => {
      const ids = await declarer('plain');
      expect(await inTransaction((tx) => standing(tx, ids))).toEqual({
        orchestratorStatus: 'active',
        allowedAgents: [ids.agent],
        token: 'live',
        agentStatus: 'active',
      });
      expect(await inTransaction((tx) => store.declarerStanding(tx, ids.orchestrator, 'jti-nobody', ids.agent))).toMatchObject({ token: 'unknown' });
      await pool.query(`UPDATE access_tokens SET expires_at = now() - interval '1 second' WHERE jti = $1`, [ids.jti]);
      expect(await inTransaction((tx) => standing(tx, ids))).toMatchObject({ token: 'expired' });
    });

    it('stands a registration changed outside Writ (its tag does not verify) as if it were gone', async () => {
      const widened = await declarer('forged');
      // As a database administrator: the orchestrator may now declare for anyone, the agent's tag is gone.
      await pool.query(`UPDATE orchestrators SET allowed_agents = '{*}' WHERE id = $1`, [widened.orchestrator]);
      expect(await inTransaction((tx) => standing(tx, widened))).toEqual({ orchestratorStatus: null, allowedAgents: [], token: 'live', agentStatus: 'active' });
      const untagged = await declarer('untagged');
      await pool.query(`UPDATE agents SET integrity_tag = NULL WHERE id = $1`, [untagged.agent]);
      expect(await inTransaction((tx) => standing(tx, untagged))).toMatchObject({ orchestratorStatus: 'active', agentStatus: null });
      // A valid tag copied from another agent does not verify for this one.
      const copied = await declarer('copied');
      await pool.query(`UPDATE agents SET integrity_tag = (SELECT integrity_tag FROM agents WHERE id = $2) WHERE id = $1`, [copied.agent, 'agent-s']);
      expect(await inTransaction((tx) => standing(tx, copied))).toMatchObject({ agentStatus: null });
    });

    it.each(changes)('makes a change (%s) wait for the declaring transaction to commit', async (name, change, after) => {
      const ids = await declarer(`wait-${changes.findIndex(([other]) => other === name)}`);
      const declaring = await begin();
      expect(await standing(declaring.tx, ids)).toMatchObject({ orchestratorStatus: 'active', token: 'live', agentStatus: 'active' });
      const order: string[] = [];
      const changed = inTransaction((tx) => change(tx, ids)).then(() => order.push('change'));
      await waitForLockWaiter(pool, `the change (${name}) did not wait for the declaration`);
      order.push('declaration');
      await declaring.end('COMMIT');
      await changed;
      expect(order).toEqual(['declaration', 'change']);
      expect(await inTransaction((tx) => standing(tx, ids))).toMatchObject(after);
    });

    it.each(changes)('sees a change (%s) that committed while the declaration waited for its lock', async (name, change, after) => {
      const ids = await declarer(`seen-${changes.findIndex(([other]) => other === name)}`);
      const changing = await begin();
      await change(changing.tx, ids);
      const read = inTransaction((tx) => standing(tx, ids));
      await waitForLockWaiter(pool, `the declaration did not wait for the change (${name})`);
      await changing.end('COMMIT');
      expect(await read).toMatchObject(after);
    });
  });
});
