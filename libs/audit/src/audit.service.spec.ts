import { Client, Pool } from 'pg';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { executeStatement, type SessionStatement, sqlArrayLiteral } from '@writ/database';
import { AuditService, AuditUnavailableError, type BatchableWork } from './audit.service';
import type { AuditEventInput } from './audit-event';
import { chainHash } from './audit-hash';

const event = (n: number): AuditEventInput => ({
  type: 'test.event',
  outcome: 'success',
  actor: { type: 'system', id: 'spec' },
  agentId: `agent-${n % 3}`,
  data: { n, nested: { b: 2, a: [1, 'x'] } },
});

describe('AuditService', () => {
  let db: TestDatabase;
  let pool: Pool;
  let audit: AuditService;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 10 });
    audit = new AuditService(pool);
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  it('extends one gapless chain from many concurrent writers, in batches', async () => {
    const results = await Promise.all(Array.from({ length: 300 }, (_, n) => audit.record(event(n))));
    const seqs = results
      .flat()
      .map((r) => r.seq)
      .sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(await audit.verify()).toEqual({ valid: true, events: 300, checkpoints_verified: 0, last_checkpoint_seq: null });
  });

  it('extends the same chain from two independent services (instances) without forking', async () => {
    const other = new AuditService(pool, { maxBatch: 7 });
    await Promise.all([...Array.from({ length: 50 }, (_, n) => audit.record(event(n))), ...Array.from({ length: 50 }, (_, n) => other.record(event(n)))]);
    const verification = await audit.verify(37);
    expect(verification.valid).toBe(true);
    expect(verification.events).toBe(400);
  });

  it('stores hostile text exactly as hashed, in every field, and refuses a NUL outside the data', async () => {
    const hostile = [`'); DROP TABLE audit_events; --`, `back\\slash \\' E'x'`, `$$ $tag$ \u2028 \ud83d\ude00`, `\\x00 \\u0000`].join(' | ');
    const [record] = await audit.record({
      type: `test.${hostile}`,
      outcome: 'denied',
      actor: { type: 'agent', id: hostile },
      agentId: hostile,
      taskId: hostile,
      connectorId: hostile,
      data: { [hostile]: hostile, nul: 'a\u0000b', list: [hostile, 1.5, null] },
    });
    const { rows } = await pool.query('SELECT type, actor_id, agent_id, task_id, connector_id, data, hash FROM audit_events WHERE seq = $1', [record.seq]);
    expect(rows[0]).toEqual({
      type: `test.${hostile}`,
      actor_id: hostile,
      agent_id: hostile,
      task_id: hostile,
      connector_id: hostile,
      data: { [hostile]: hostile, nul: 'ab', list: [hostile, 1.5, null] },
      hash: record.hash,
    });
    await expect(audit.record({ ...event(1), agentId: 'a\u0000b' })).rejects.toThrow(/NUL|0x00/);
    expect((await audit.verify()).valid).toBe(true);
  });

  it('writes with parameters, transparently, once a prepared statement is missing on its connection (a transaction-mode pooler)', async () => {
    const single = new Pool({ connectionString: db.url, max: 1 });
    const notices: string[] = [];
    const service = new AuditService(single, { onNotice: (message) => notices.push(message) });
    const doubled: SessionStatement = { name: 'writ_spec_double', text: 'SELECT v * 2 AS v FROM unnest($1::int[]) AS u(v)' };
    let withParameters = 0;
    const double = (n: number): BatchableWork<number, number> => ({
      kind: 'double',
      params: n,
      run: async (client, values) => {
        withParameters += 1;
        const { rows } = await client.query<{ v: number }>('SELECT v * 2 AS v FROM unnest($1::int[]) AS u(v)', [values]);
        return rows.map((row) => row.v);
      },
      inline: {
        statements: [doubled],
        sql: (values) => executeStatement(doubled, [sqlArrayLiteral(values)]),
        parse: (rows) => rows.map((row) => Number(row.v)),
      },
    });
    try {
      expect((await service.recordWithBatched(double(21), () => [event(0)])).result).toBe(42);
      expect(withParameters).toBe(0); // inlined, with EXECUTE
      await service.record(event(1)); // prepares on the one connection
      // What a transaction-mode pooler does: the next transaction runs on a server connection
      // where nothing was prepared.
      await single.query('DEALLOCATE ALL');
      const [record] = await service.record(event(2));
      expect(record.seq).toBeGreaterThan(0);
      expect(notices).toHaveLength(1);
      await Promise.all(Array.from({ length: 20 }, (_, n) => service.record(event(n))));
      expect(notices).toHaveLength(1);
      expect((await service.recordWithBatched(double(4), () => [event(3)])).result).toBe(8);
      expect(withParameters).toBe(1);
      expect((await service.verify()).valid).toBe(true);
    } finally {
      await single.end();
    }
  });

  it('writes events recorded for later with the next batch, on their own after laterMs, or at drain', async () => {
    const commits: number[] = [];
    const later = new AuditService(pool, { laterMs: 60_000, onCommitted: (records) => commits.push(records.length) });
    const riding = later.recordLater(event(1));
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(commits).toEqual([]);
    const [waited] = await later.record(event(2));
    const [rode] = await riding;
    expect(commits).toEqual([2]);
    expect(rode.seq + 1).toBe(waited.seq);

    const drained = later.recordLater(event(3));
    await later.drain();
    expect((await drained)[0].seq).toBeGreaterThan(waited.seq);
    expect(commits).toEqual([2, 1]);

    const alone = new AuditService(pool, { laterMs: 5 });
    const [written] = await alone.recordLater(event(4));
    expect((await pool.query('SELECT hash FROM audit_events WHERE seq = $1', [written.seq])).rows[0].hash).toBe(written.hash);
    expect((await audit.verify()).valid).toBe(true);
  });

  it('runs the batchable work of concurrent units in one statement per kind, each getting its own result', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS spec_batched (id int PRIMARY KEY)');
    const runs: number[][] = [];
    const run = async (client: import('pg').PoolClient, ids: number[]) => {
      runs.push(ids);
      const { rows } = await client.query('INSERT INTO spec_batched SELECT unnest($1::int[]) ON CONFLICT DO NOTHING RETURNING id', [ids]);
      const inserted = new Set(rows.map((row) => row.id as number));
      return ids.map((id) => inserted.has(id));
    };
    await pool.query('INSERT INTO spec_batched VALUES (5)');
    const outcomes = await Promise.all(
      Array.from({ length: 10 }, (_, id) => audit.recordWithBatched({ kind: 'spec-insert', params: id, run }, (inserted) => (inserted ? [event(id)] : []))),
    );
    expect(outcomes.map((outcome) => outcome.result)).toEqual([true, true, true, true, true, false, true, true, true, true]);
    expect(outcomes[5].records).toEqual([]);
    expect(outcomes[0].records).toHaveLength(1);
    expect(runs.length).toBeLessThan(10);
    expect(runs.flat().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect((await audit.verify()).valid).toBe(true);
  });

  it('commits work and its events together, and neither when the work fails', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS spec_side (id int PRIMARY KEY)');
    const ok = await audit.recordWith(
      async (client) => (await client.query('INSERT INTO spec_side VALUES (1) RETURNING id')).rows[0].id as number,
      (id) => [{ ...event(1), data: { side: id } }],
    );
    expect(ok.result).toBe(1);
    const before = (await audit.verify()).events;
    const failing = audit.recordWith(
      async (client) => client.query('INSERT INTO spec_side VALUES (1)'),
      () => [event(2)],
    );
    const concurrent = audit.record(event(3));
    await expect(failing).rejects.toThrow(/duplicate key/);
    await expect(concurrent).resolves.toHaveLength(1);
    expect((await audit.verify()).events).toBe(before + 1);
  });

  it('refuses UPDATE, DELETE and TRUNCATE of audit rows in the database itself', async () => {
    await expect(pool.query(`UPDATE audit_events SET type = 'x' WHERE seq = 1`)).rejects.toThrow(/append-only/);
    await expect(pool.query('DELETE FROM audit_events WHERE seq = 1')).rejects.toThrow(/append-only/);
    await expect(pool.query('TRUNCATE audit_events')).rejects.toThrow(/append-only/);
  });

  it('gives the service role no UPDATE, DELETE or TRUNCATE on audit rows', async () => {
    const login = `writ_login_${Date.now()}`;
    await pool.query(`CREATE ROLE ${login} LOGIN PASSWORD 'pw' IN ROLE writ_service`);
    const url = new URL(db.url);
    url.username = login;
    url.password = 'pw';
    const client = new Client({ connectionString: url.toString() });
    await client.connect();
    try {
      await client.query('SET ROLE writ_service');
      expect((await client.query('SELECT count(*) FROM audit_events')).rowCount).toBe(1);
      await expect(client.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only')).rejects.toThrow(/owner|permission/);
      await expect(client.query(`UPDATE audit_events SET type = 'x' WHERE seq = 1`)).rejects.toThrow(/permission denied/);
      await expect(client.query('DELETE FROM audit_events')).rejects.toThrow(/permission denied/);
      await expect(client.query('TRUNCATE audit_events')).rejects.toThrow(/permission denied/);
    } finally {
      await client.end();
      await pool.query(`DROP ROLE ${login}`);
    }
  });

  it('names the first altered row when a superuser tampers with the chain', async () => {
    const client = new Client({ connectionString: db.url });
    await client.connect();
    try {
      await client.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only');
      await client.query(`UPDATE audit_events SET data = '{"n": 999}' WHERE seq = 42`);
      await client.query('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only');
    } finally {
      await client.end();
    }
    const verification = await audit.verify(10);
    expect(verification).toMatchObject({ valid: false, first_invalid_seq: 42, reason: expect.stringMatching(/hash/) });
  });

  it('writes an event quoting lone surrogates and NUL (values and member names), and its hash recomputes', async () => {
    const [record] = await audit.record({
      type: 'test.hostile',
      outcome: 'denied',
      actor: { type: 'anonymous' },
      data: { description: 'purpose \ud800 and \udc00x\u0000', list: ['\ud83d\ude00', '\udbff'], ['k\ud800']: { ok: true } },
    });
    expect(record.data).toEqual({ description: 'purpose \ufffd and \ufffdx', list: ['\ud83d\ude00', '\ufffd'], ['k\ufffd']: { ok: true } });
    const stored = await pool.query<{ data: unknown }>('SELECT data FROM audit_events WHERE seq = $1', [record.seq]);
    expect(stored.rows[0].data).toEqual(record.data);
    const { hash, prev_hash: prevHash, ...body } = (await audit.list({ type: 'test.hostile' }, { limit: 1 })).items[0];
    expect(chainHash(prevHash, body)).toBe(hash);
  });

  it('filters and pages with a cursor', async () => {
    const first = await audit.list({ agentId: 'agent-1', type: 'test.event' }, { limit: 5 });
    expect(first.items).toHaveLength(5);
    expect(first.items.every((r) => r.agent_id === 'agent-1')).toBe(true);
    const second = await audit.list({ agentId: 'agent-1' }, { limit: 5, after: first.nextCursor! });
    expect(second.items[0].seq).toBeLessThan(first.items[4].seq);
  });

  it('fails closed when the database is unreachable', async () => {
    const dead = new Pool({ connectionString: 'postgres://x:y@127.0.0.1:1/none', connectionTimeoutMillis: 500 });
    await expect(new AuditService(dead).record(event(1))).rejects.toBeInstanceOf(AuditUnavailableError);
    await dead.end();
  });
});
