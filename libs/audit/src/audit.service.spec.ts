import { Client, Pool } from 'pg';
import { createTestDatabase, TestDatabase, waitForLockWaiter } from '@writ/testing';
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

/** An event carrying `value` in every text column: type (after `test.`), actor, agent, task and connector. */
const inEveryColumn = (value: string, outcome: AuditEventInput['outcome'], data: Record<string, unknown>): AuditEventInput => ({
  type: `test.${value}`,
  outcome,
  actor: { type: 'agent', id: value },
  agentId: value,
  taskId: value,
  connectorId: value,
  data,
});

/**
 * Work that leaves a row per unit in `spec_order`, whose `ran` serial says when it ran: the
 * order the chain must list the units' events in. Kind `inline-*` runs in the message that
 * locks the chain head; `expect-*` in a batch sent as one message; others with `run`.
 */
const ordered = (kind: string, label: string): BatchableWork<string, boolean> => {
  const insert = (labels: string[], literal: (value: string) => string) =>
    `INSERT INTO spec_order (label) SELECT unnest(ARRAY[${labels.map(literal).join(', ')}]::text[])`;
  return {
    kind,
    params: label,
    run: async (client, labels) => {
      await client.query('INSERT INTO spec_order (label) SELECT unnest($1::text[])', [labels]);
      return labels.map(() => true);
    },
    inline: {
      sql: (labels, literal) => (kind.startsWith('inline-') ? `${insert(labels, literal)} RETURNING label` : undefined),
      parse: (_rows, labels) => labels.map(() => true),
      ...(kind.startsWith('expect-')
        ? {
            expect: {
              statements: [],
              sql: (labels: string[], literal: (value: string) => string) =>
                `WITH i AS (${insert(labels, literal)} RETURNING 1) SELECT writ_expect(count(*), ${labels.length}::bigint, 'the rows inserted') FROM i`,
              expected: () => true,
            },
          }
        : {}),
    },
  };
};
const orderEvent = (label: string): AuditEventInput => ({ type: 'test.order', outcome: 'success', actor: { type: 'system', id: 'spec' }, data: { label } });

/** The labels of `spec_order` as the work ran, and of the `test.order` events as chained. */
async function ranAndChained(pool: Pool): Promise<{ ran: string[]; chained: string[] }> {
  const ran = await pool.query<{ label: string }>('SELECT label FROM spec_order ORDER BY ran');
  const chained = await pool.query<{ label: string }>(`SELECT data->>'label' AS label FROM audit_events WHERE type = 'test.order' ORDER BY seq`);
  return { ran: ran.rows.map((row) => row.label), chained: chained.rows.map((row) => row.label) };
}

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
    const [record] = await audit.record(inEveryColumn(hostile, 'denied', { [hostile]: hostile, nul: 'a\u0000b', list: [hostile, 1.5, null] }));
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

  it('chains the events of a batch in the order its units did their work, not the order they were queued in', async () => {
    await pool.query('CREATE TABLE IF NOT EXISTS spec_order (ran bigserial PRIMARY KEY, label text NOT NULL)');
    await pool.query('TRUNCATE spec_order');
    await audit.record(event(0));
    // Queued in one tick, so written in one batch: work queued first runs after the batched
    // work (inlined kinds in the message that locks the head, then the others), and an event
    // without work records what happened before the batch.
    const units = await Promise.all([
      audit.recordWith(
        async (client) => (await client.query(`INSERT INTO spec_order (label) VALUES ('work-1')`)).rowCount,
        () => [orderEvent('work-1'), orderEvent('work-1')],
      ),
      audit.recordWithBatched(ordered('plain-b', 'plain-b-2'), () => [orderEvent('plain-b-2')]),
      audit.record({ ...orderEvent('record-3'), type: 'test.order.recorded' }).then((records) => ({ records })),
      audit.recordWithBatched(ordered('inline-a', 'inline-a-4'), () => [orderEvent('inline-a-4')]),
      audit.recordWith(
        async (client) => (await client.query(`INSERT INTO spec_order (label) VALUES ('work-5')`)).rowCount,
        () => [orderEvent('work-5')],
      ),
      audit.recordWithBatched(ordered('inline-a', 'inline-a-6'), () => [orderEvent('inline-a-6')]),
    ]);
    const seqs = units.map((unit) => unit.records.map((record) => record.seq));
    const all = seqs.flat().sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 7 }, (_, index) => all[0] + index));
    const { ran, chained } = await ranAndChained(pool);
    expect(ran).toEqual(['inline-a-4', 'inline-a-6', 'plain-b-2', 'work-1', 'work-5']);
    expect([...new Set(chained)]).toEqual(ran);
    // The event without work is chained first; each unit's records are its own, in order.
    expect(seqs[2][0]).toBeLessThan(Math.min(...seqs.filter((_, index) => index !== 2).flat()));
    expect(units[0].records.map((record) => record.data.label)).toEqual(['work-1', 'work-1']);
    expect(seqs[0][1]).toBe(seqs[0][0] + 1);
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

  it('hashes the event columns as they are stored, lone surrogates included, so the chain still verifies', async () => {
    const lone = 'x\ud800y';
    const [record] = await audit.record(inEveryColumn(lone, 'info', {}));
    const { rows } = await pool.query('SELECT type, actor_id, agent_id, task_id, connector_id FROM audit_events WHERE seq = $1', [record.seq]);
    expect(rows[0]).toEqual({ type: 'test.x\ufffdy', actor_id: 'x\ufffdy', agent_id: 'x\ufffdy', task_id: 'x\ufffdy', connector_id: 'x\ufffdy' });
    expect(record.agent_id).toBe('x\ufffdy');
    // The stored row hashes to its hash (earlier cases here tamper with the chain, so not verify()).
    const stored = (await audit.list({ type: 'test.x\ufffdy' }, { limit: 1 })).items[0];
    const { hash, prev_hash: prevHash, ...body } = stored;
    expect(chainHash(prevHash, body)).toBe(hash);
    expect(stored.hash).toBe(record.hash);
  });

  it('hashes data holding a member named toJSON as stored, so a caller cannot make the chain fail to verify', async () => {
    // jsonb keeps members shortest first: read back, this object's members come in another order
    // than they were written in, and the canonical JSON must not depend on that order.
    const [record] = await audit.record({
      type: 'test.tojson',
      outcome: 'info',
      actor: { type: 'agent', id: 'spec' },
      data: { metadata: { toJSON: 1, zz: true, a: 'x' }, list: [{ toJSON: 'y', b: 1, aaa: 2 }] },
    });
    const stored = (await audit.list({ type: 'test.tojson' }, { limit: 1 })).items[0];
    expect(Object.keys(stored.data.metadata as object)).toEqual(['a', 'zz', 'toJSON']);
    const { hash, prev_hash: prevHash, ...body } = stored;
    expect(chainHash(prevHash, body)).toBe(hash);
    expect(stored.hash).toBe(record.hash);
  });

  it('filters and pages with a cursor', async () => {
    const first = await audit.list({ agentId: 'agent-1', type: 'test.event' }, { limit: 5 });
    expect(first.items).toHaveLength(5);
    expect(first.items.every((r) => r.agent_id === 'agent-1')).toBe(true);
    const second = await audit.list({ agentId: 'agent-1' }, { limit: 5, after: first.nextCursor! });
    expect(second.items[0].seq).toBeLessThan(first.items[4].seq);
  });

  it('gives events ids that grow with their sequence, so the id index is appended to', async () => {
    const records = (await Promise.all(Array.from({ length: 40 }, (_, n) => audit.record(event(n))))).flat().sort((a, b) => a.seq - b.seq);
    const ids = records.map((record) => record.id);
    // UUIDv7 (RFC 9562): version 7, and in the order the events were chained.
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
  });

  it('fails closed when the database is unreachable', async () => {
    const dead = new Pool({ connectionString: 'postgres://x:y@127.0.0.1:1/none', connectionTimeoutMillis: 500 });
    await expect(new AuditService(dead).record(event(1))).rejects.toBeInstanceOf(AuditUnavailableError);
    await dead.end();
  });
});

describe('AuditService, batches sent as one message', () => {
  let db: TestDatabase;
  let pool: Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 10 });
    await pool.query('CREATE TABLE spec_expect (id int PRIMARY KEY)');
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  /** A service that tells, per batch, whether it went as one message and whether that committed. */
  const watched = (options: { maxBatch?: number } = {}) => {
    const oneMessage: boolean[] = [];
    const service = new AuditService(pool, { ...options, onOneMessage: (committed) => oneMessage.push(committed) });
    return { service, oneMessage };
  };

  const headOf = async () => (await pool.query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_chain_head WHERE id = 1')).rows[0];

  it('sends a batch as one message once it knows the chain head, and the chain verifies', async () => {
    const { service, oneMessage } = watched();
    await service.record(event(0)); // learns the head
    expect(oneMessage).toEqual([]);
    const records = (await Promise.all(Array.from({ length: 40 }, (_, n) => service.record(event(n))))).flat();
    expect(oneMessage.length).toBeGreaterThan(0);
    expect(oneMessage.every((committed) => committed)).toBe(true);
    const head = await headOf();
    expect(Number(head.seq)).toBe(Math.max(...records.map((record) => record.seq)));
    expect((await service.verify()).valid).toBe(true);
  });

  it('writes a batch again on the real head when another writer moved it', async () => {
    const { service, oneMessage } = watched();
    const other = new AuditService(pool);
    await service.record(event(1));
    const [moved] = await other.record(event(2));
    const [written] = await service.record(event(3));
    expect(oneMessage).toEqual([false]); // failed its expectation: nothing of it committed
    expect(written.seq).toBe(moved.seq + 1);
    expect(written.prev_hash).toBe(moved.hash);
    await other.record(event(4));
    await service.record(event(5)); // a failure now and then does not stop attempts
    await service.record(event(6));
    expect(oneMessage).toEqual([false, false, true]);
    expect(Number((await headOf()).seq)).toBe(written.seq + 3);
    expect((await service.verify()).valid).toBe(true);
  });

  it('stops sending batches as one message while another writer keeps moving the head, but for a probe now and then', async () => {
    const { service, oneMessage } = watched();
    const other = new AuditService(pool);
    await service.record(event(20));
    for (let turn = 0; turn < 6; turn += 1) {
      await other.record(event(21));
      await service.record(event(22));
    }
    expect(oneMessage).toEqual([false, false, false]); // three failures in a row: attempts stop
    for (let n = 0; n < 60; n += 1) await service.record(event(23));
    expect(oneMessage).toHaveLength(3);
    await service.record(event(24)); // the 64th batch since the last attempt: a probe
    expect(oneMessage).toEqual([false, false, false, true]);
    await service.record(event(25)); // one success is not enough to start again
    expect(oneMessage).toHaveLength(4);
    expect((await service.verify()).valid).toBe(true);
  });

  it('waits for the chain-head lock and checks the head it finds under it', async () => {
    const { service, oneMessage } = watched();
    await service.record(event(7));
    const holder = new Client({ connectionString: db.url });
    await holder.connect();
    try {
      // Another instance's batch in flight: it holds the head, appends an event and commits late.
      await holder.query('BEGIN');
      const head = (await holder.query<{ seq: string; hash: string }>('SELECT seq, hash FROM audit_chain_head WHERE id = 1 FOR UPDATE')).rows[0];
      const body = {
        seq: Number(head.seq) + 1,
        id: '00000000-0000-4000-8000-000000000001',
        occurred_at: new Date().toISOString(),
        type: 'test.other',
        outcome: 'success' as const,
        actor_type: 'system' as const,
        actor_id: 'other',
        agent_id: null,
        task_id: null,
        connector_id: null,
        data: {},
      };
      const hash = chainHash(head.hash, body);
      await holder.query(
        `INSERT INTO audit_events (seq, id, occurred_at, type, outcome, actor_type, actor_id, agent_id, task_id, connector_id, data, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL, '{}', $8, $9)`,
        [body.seq, body.id, body.occurred_at, body.type, body.outcome, body.actor_type, body.actor_id, head.hash, hash],
      );
      await holder.query('UPDATE audit_chain_head SET seq = $1, hash = $2 WHERE id = 1', [body.seq, hash]);
      const pending = service.record(event(8));
      await waitForLockWaiter(pool, 'no batch waited for the chain-head lock');
      await holder.query('COMMIT');
      const [written] = await pending;
      expect(oneMessage).toEqual([false]);
      expect(written.seq).toBe(body.seq + 1);
      expect(written.prev_hash).toBe(hash);

      // The same, with a batch that commits nothing: the head is still the expected one.
      await service.record(event(9));
      expect(oneMessage).toEqual([false, true]);
      await holder.query('BEGIN');
      await holder.query('SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE');
      const waiting = service.record(event(11));
      await waitForLockWaiter(pool, 'no batch waited for the chain-head lock');
      await holder.query('ROLLBACK');
      await waiting;
      expect(oneMessage).toEqual([false, true, true]);
    } finally {
      await holder.end();
    }
    expect((await service.verify()).valid).toBe(true);
  });

  it('chains a one-message batch in the order its kinds ran, not the order its units were queued in', async () => {
    const { service, oneMessage } = watched();
    await pool.query('CREATE TABLE IF NOT EXISTS spec_order (ran bigserial PRIMARY KEY, label text NOT NULL)');
    await pool.query('TRUNCATE spec_order');
    await service.record(event(13)); // learns the head
    await Promise.all([
      service.recordWithBatched(ordered('expect-a', 'a-1'), () => [orderEvent('a-1')]),
      service.recordWithBatched(ordered('expect-b', 'b-2'), () => [orderEvent('b-2')]),
      service.recordWithBatched(ordered('expect-a', 'a-3'), () => [orderEvent('a-3')]),
    ]);
    expect(oneMessage).toEqual([true]);
    const { ran, chained } = await ranAndChained(pool);
    expect(ran).toEqual(['a-1', 'a-3', 'b-2']);
    expect(chained).toEqual(ran);
    expect((await service.verify()).valid).toBe(true);
  });

  it('rolls the whole message back when work has another result than expected, and writes the batch with the real ones', async () => {
    const { service, oneMessage } = watched();
    await service.record(event(12));
    await pool.query('INSERT INTO spec_expect VALUES (5)');
    const allInserted: SessionStatement = {
      name: 'writ_spec_insert_x',
      text: `WITH inserted AS (INSERT INTO spec_expect SELECT unnest($1::int[]) ON CONFLICT DO NOTHING RETURNING id)
             SELECT writ_expect(count(*), $2::bigint, 'the rows inserted') FROM inserted`,
    };
    const insert = (id: number): BatchableWork<number, boolean> => ({
      kind: 'spec-expect',
      params: id,
      run: async (client, ids) => {
        const { rows } = await client.query<{ id: number }>('INSERT INTO spec_expect SELECT unnest($1::int[]) ON CONFLICT DO NOTHING RETURNING id', [ids]);
        const inserted = new Set(rows.map((row) => row.id));
        return ids.map((one) => inserted.has(one));
      },
      inline: {
        sql: () => undefined,
        parse: () => [],
        expect: { statements: [allInserted], sql: (ids) => executeStatement(allInserted, [sqlArrayLiteral(ids), String(ids.length)]), expected: () => true },
      },
    });
    const outcomes = await Promise.all(
      Array.from({ length: 8 }, (_, id) =>
        service.recordWithBatched(insert(id), (inserted) => [{ ...event(id), type: inserted ? 'test.inserted' : 'test.conflict', data: { id } }]),
      ),
    );
    // Written by the batch's second attempt: the first one's inserts did not stay.
    expect(outcomes.map((outcome) => outcome.result)).toEqual([true, true, true, true, true, false, true, true]);
    expect(oneMessage[0]).toBe(false);
    const { rows } = await pool.query<{ type: string; n: string }>(
      `SELECT type, count(*) AS n FROM audit_events WHERE type IN ('test.inserted', 'test.conflict') GROUP BY type ORDER BY type`,
    );
    expect(rows.map((row) => [row.type, Number(row.n)])).toEqual([
      ['test.conflict', 1],
      ['test.inserted', 7],
    ]);
    expect((await pool.query('SELECT count(*)::int AS n FROM spec_expect')).rows[0].n).toBe(8);
    expect((await service.verify()).valid).toBe(true);
  });

  it('extends one gapless chain from instances taking turns, truly in parallel', async () => {
    const services = Array.from({ length: 3 }, (_, n) => watched({ maxBatch: 5 + n }));
    const before = Number((await headOf()).seq);
    const written = (await Promise.all(services.flatMap(({ service }, n) => Array.from({ length: 60 }, (_, i) => service.record(event(n * 100 + i)))))).flat();
    const seqs = written.map((record) => record.seq).sort((a, b) => a - b);
    expect(seqs).toEqual(Array.from({ length: 180 }, (_, i) => before + i + 1));
    expect((await services[0].service.verify()).valid).toBe(true);
  });
});
