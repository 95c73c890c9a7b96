import { randomUUID } from 'node:crypto';
import { Pool, PoolClient } from 'pg';
import { EXPECTATION_FAILED, prepareOnce } from '@writ/database';
import { createTestDatabase, insertTaskRow, tagConnectorRow, TestDatabase, testRowIntegrity } from '@writ/testing';
import { GrantStateRepository, RecheckParams, SpendParams, SpendResult } from './grant-state.repository';

/** The batched spend of use-limited gateway calls, on real PostgreSQL, both ways it is sent. */
describe('GrantStateRepository: spending a batch of calls', () => {
  let db: TestDatabase;
  let pool: Pool;
  let grants: GrantStateRepository;
  let task: string;
  let endedTask: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 2 });
    grants = new GrantStateRepository(pool, testRowIntegrity());
    await pool.query(`INSERT INTO connectors (id, name, base_url, operations) VALUES ('payments', 'Payments', 'https://payments.test', '[]')`);
    await tagConnectorRow(pool, testRowIntegrity(), 'payments');
    task = await insertTask('active');
    endedTask = await insertTask('completed');
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  async function insertTask(status: string): Promise<string> {
    return insertTaskRow(pool, testRowIntegrity(), { agentId: 'agent-1', orchestratorId: 'orch-1', purpose: 'pay', status });
  }

  async function credential(maxUses: number | null, options: { uses?: number; taskId?: string; revoked?: boolean; expired?: boolean } = {}): Promise<string> {
    const jti = randomUUID();
    await pool.query(
      `INSERT INTO access_tokens (jti, kind, client_id, subject, task_id, connector_id, action, max_uses, uses, issued_at, expires_at, revoked_at)
       VALUES ($1, 'connector', 'agent-1', 'agent-1', $2, 'payments', 'payouts.create', $3, $4, now(), now() + $5::interval, $6)`,
      [jti, options.taskId ?? task, maxUses, options.uses ?? 0, options.expired ? '-1 second' : '5 minutes', options.revoked ? new Date() : null],
    );
    return jti;
  }

  async function connectorVersion(): Promise<string> {
    const { rows } = await pool.query<{ version: string }>(`SELECT version::text AS version FROM connectors WHERE id = 'payments'`);
    return rows[0].version;
  }

  async function usesOf(jti: string): Promise<number> {
    const { rows } = await pool.query<{ uses: number }>('SELECT uses FROM access_tokens WHERE jti = $1', [jti]);
    return rows[0].uses;
  }

  /** Spends `checks` in one transaction, with parameters or as the audit batch's inline EXECUTE. */
  async function spend(checks: RecheckParams[], way: 'parameters' | 'inline'): Promise<SpendResult[]> {
    const client: PoolClient = await pool.connect();
    try {
      if (way === 'inline') await prepareOnce(client, grants.spendInline.statements);
      await client.query('BEGIN');
      const results =
        way === 'parameters'
          ? await grants.spendAt(client, checks)
          : grants.spendInline.parse(
              ((await client.query(grants.spendInline.sql(checks))) as unknown as { rows: Array<Record<string, unknown>> }).rows,
              checks,
            );
      await client.query('COMMIT');
      return results;
    } finally {
      client.release();
    }
  }

  describe.each(['parameters', 'inline'] as const)('sent with %s', (way) => {
    it('lets one of two calls of one batch spend a one-use credential, and only once', async () => {
      const jti = await credential(1);
      const version = await connectorVersion();
      const results = await spend(
        [
          { jti, connectorVersion: version },
          { jti, connectorVersion: version },
        ],
        way,
      );
      expect(results).toEqual([{ verdict: 'live', uses: 1, maxUses: 1 }, { verdict: 'dead' }]);
      expect(await usesOf(jti)).toBe(1);
      // Spent: the next batch finds nothing left.
      expect(await spend([{ jti, connectorVersion: null }], way)).toEqual([{ verdict: 'dead' }]);
      expect(await usesOf(jti)).toBe(1);
    });

    it('takes the calls of one credential in order, counting the uses left, beside other credentials', async () => {
      const three = await credential(3, { uses: 1 });
      const unlimited = await credential(null, { uses: 5 });
      const version = await connectorVersion();
      const results = await spend(
        [
          { jti: three, connectorVersion: version },
          { jti: unlimited, connectorVersion: null },
          { jti: three, connectorVersion: null },
          { jti: three, connectorVersion: version },
          { jti: unlimited, connectorVersion: version },
          { jti: three, connectorVersion: version },
        ],
        way,
      );
      expect(results).toEqual([
        { verdict: 'live', uses: 2, maxUses: 3 },
        { verdict: 'live', uses: 6, maxUses: null },
        { verdict: 'live', uses: 3, maxUses: 3 },
        { verdict: 'dead' },
        { verdict: 'live', uses: 7, maxUses: null },
        { verdict: 'dead' },
      ]);
      expect(await usesOf(three)).toBe(3);
      expect(await usesOf(unlimited)).toBe(7);
    });

    it('counts uses set below zero by hand as none spent: a one-use credential stays one-use', async () => {
      // A database administrator (no signing key) lowers the untagged counter instead of raising max_uses.
      const jti = await credential(1, { uses: -1_000_000 });
      const version = await connectorVersion();
      const results = await spend(
        Array.from({ length: 3 }, () => ({ jti, connectorVersion: version })),
        way,
      );
      expect(results).toEqual([{ verdict: 'live', uses: 1, maxUses: 1 }, { verdict: 'dead' }, { verdict: 'dead' }]);
      expect(await usesOf(jti)).toBe(1);
      expect(await spend([{ jti, connectorVersion: version }], way)).toEqual([{ verdict: 'dead' }]);
    });

    it('spends nothing for a call whose connector moved on (stale, checked again) while uses are left', async () => {
      const jti = await credential(2);
      const version = await connectorVersion();
      const old = String(BigInt(version) - 1n);
      const results = await spend(
        [
          { jti, connectorVersion: old },
          { jti, connectorVersion: version },
          { jti, connectorVersion: old },
          { jti, connectorVersion: version },
          { jti, connectorVersion: old },
        ],
        way,
      );
      expect(results).toEqual([
        { verdict: 'stale' },
        { verdict: 'live', uses: 1, maxUses: 2 },
        { verdict: 'stale' },
        { verdict: 'live', uses: 2, maxUses: 2 },
        { verdict: 'dead' },
      ]);
      expect(await usesOf(jti)).toBe(2);
    });

    it('spends nothing of a revoked or expired credential, one of an ended task, or an unknown one', async () => {
      const revoked = await credential(5, { revoked: true });
      const expired = await credential(5, { expired: true });
      const ended = await credential(5, { taskId: endedTask });
      const live = await credential(5);
      const results = await spend(
        [revoked, expired, ended, randomUUID(), "x'); DELETE FROM access_tokens; --", live].map((jti) => ({ jti, connectorVersion: null })),
        way,
      );
      expect(results.map((result) => result.verdict)).toEqual(['dead', 'dead', 'dead', 'dead', 'dead', 'live']);
      for (const jti of [revoked, expired, ended]) expect(await usesOf(jti)).toBe(0);
      expect(await usesOf(live)).toBe(1);
    });
  });

  describe('sent as one message with its events, expecting the uses each call leaves', () => {
    /** Runs the expecting statement in a transaction of its own: committed, or the error it failed with. */
    async function spendExpecting(checks: SpendParams[]): Promise<string> {
      const client = await pool.connect();
      try {
        await prepareOnce(client, grants.spendInline.expect.statements);
        const sql = grants.spendInline.expect.sql(checks);
        if (sql === undefined) return 'not sent';
        await client.query(sql);
        return 'committed';
      } catch (error) {
        return (error as { code?: string }).code ?? 'error';
      } finally {
        client.release();
      }
    }

    it('commits when every call is live and leaves the uses expected, in order, for the same credential too', async () => {
      const jti = await credential(3, { uses: 1 });
      const other = await credential(null);
      const checks = [
        { jti, connectorVersion: null, expectedUses: 2 },
        { jti: other, connectorVersion: null, expectedUses: 1 },
        { jti, connectorVersion: null, expectedUses: 3 },
      ];
      expect(await spendExpecting(checks)).toBe('committed');
      expect(await usesOf(jti)).toBe(3);
      expect(checks.map((check) => grants.spendInline.expect.expected({ ...check, maxUses: 3 }))).toEqual([
        { verdict: 'live', uses: 2, maxUses: 3 },
        { verdict: 'live', uses: 1, maxUses: 3 },
        { verdict: 'live', uses: 3, maxUses: 3 },
      ]);
    });

    it('fails, spending nothing, when another spend came first, a use is missing, or the credential was revoked', async () => {
      const spentElsewhere = await credential(5, { uses: 2 });
      const oneUse = await credential(1);
      const revoked = await credential(5, { revoked: true });
      const ok = await credential(5);
      for (const checks of [
        [{ jti: spentElsewhere, connectorVersion: null, expectedUses: 1 }],
        [
          { jti: oneUse, connectorVersion: null, expectedUses: 1 },
          { jti: oneUse, connectorVersion: null, expectedUses: 2 },
        ],
        [
          { jti: ok, connectorVersion: null, expectedUses: 1 },
          { jti: revoked, connectorVersion: null, expectedUses: 1 },
        ],
        [{ jti: ok, connectorVersion: String(Number(await connectorVersion()) + 1), expectedUses: 1 }],
      ]) {
        expect(await spendExpecting(checks)).toBe(EXPECTATION_FAILED);
      }
      for (const [jti, uses] of [
        [spentElsewhere, 2],
        [oneUse, 0],
        [revoked, 0],
        [ok, 0],
      ] as const) {
        expect(await usesOf(jti)).toBe(uses);
      }
      // A call without an expectation: the batch is not sent as one message.
      expect(await spendExpecting([{ jti: ok, connectorVersion: null }])).toBe('not sent');
    });
  });
});
