import { Client } from 'pg';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, World } from './support/grant-flow';
import { http, sendJson, TestResponse, tokenRequest } from './support/oauth-client';
import { startTestServices, TestServices } from './support/test-services';

describe('admin API: audit log', () => {
  let services: TestServices;
  let world: World;
  let viewer: string;
  let taskId: string;

  const api = <T = any>(method: string, path: string, body?: unknown, token: string = services.adminToken): Promise<TestResponse<T>> =>
    sendJson<T>(method, `${services.adminUrl}${path}`, body, token);
  const exportLines = async (query = '') => {
    const response = await fetch(`${services.adminUrl}/v1/audit/export${query}`, { headers: { authorization: `Bearer ${viewer}` } });
    const text = await response.text();
    return {
      response,
      records: text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line)),
      text,
    };
  };

  /**
   * What no writer of Writ produces: an event's data nested 8 000 levels deep (past what
   * JavaScript serialises), written by a superuser with the append-only trigger off. `seqSql`
   * selects the event; `$1` is the data. Returns the number of events changed.
   */
  const nestDataAsSuperuser = async (seqSql: string, values: unknown[] = []): Promise<number> => {
    const client = new Client({ connectionString: services.db.url });
    await client.connect();
    try {
      await client.query('BEGIN');
      await client.query('SET LOCAL session_replication_role = replica');
      const nested = '{"d":'.repeat(8_000) + '{}' + '}'.repeat(8_000);
      const { rowCount } = await client.query(`UPDATE audit_events SET data = $1::jsonb WHERE seq = ${seqSql}`, [nested, ...values]);
      await client.query('COMMIT');
      return rowCount ?? 0;
    } finally {
      await client.end();
    }
  };

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    viewer = (await api('POST', '/v1/admin-tokens', { name: 'viewer', role: 'viewer' })).body.token;
    // A story: two tasks, one grant, one refusal.
    const task = await createTask(services, world.orchestrator);
    taskId = task.task_id;
    expect((await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, PAYOUT_REQUEST))).status).toBe(200);
    const outside = [{ ...PAYOUT_REQUEST[0], constraints: { destination: 'acct_evil', amount_max: 1, currency: 'usd' } }];
    expect((await tokenRequest(services.issuer, world.agent, exchangeFields(task.task_token, outside))).status).toBe(400);
    await createTask(services, world.orchestrator, { agent_id: 'agent-2' });
  });
  afterAll(() => services.close());

  it('lists events newest first, filtered by agent, task, connector, type and outcome', async () => {
    const all = await api('GET', '/v1/audit?limit=1000', undefined, viewer);
    expect(all.status).toBe(200);
    const seqs = all.body.items.map((event: { seq: number }) => event.seq);
    expect(seqs).toEqual([...seqs].sort((a: number, b: number) => b - a));
    expect(all.body.next_cursor).toBeNull();
    const byTask = await api('GET', `/v1/audit?task_id=${taskId}`);
    expect(byTask.body.items.map((event: { type: string }) => event.type)).toEqual(['grant.decision', 'token.issued', 'grant.decision', 'task.created']);
    const denied = await api('GET', '/v1/audit?agent_id=agent-1&type=grant.decision&outcome=denied&connector=payments');
    expect(denied.body.items).toHaveLength(1);
    expect(denied.body.items[0]).toMatchObject({ type: 'grant.decision', outcome: 'denied', agent_id: 'agent-1', connector_id: 'payments', task_id: taskId });
    expect(denied.body.items[0]).toEqual(
      expect.objectContaining({ seq: expect.any(Number), hash: expect.stringMatching(/^[0-9a-f]{64}$/), prev_hash: expect.stringMatching(/^[0-9a-f]{64}$/) }),
    );
    const agent2 = await api('GET', '/v1/audit?agent_id=agent-2');
    expect(agent2.body.items.map((event: { type: string }) => event.type)).toEqual(['task.created']);
    expect((await api('GET', '/v1/audit?type=no.such.type')).body).toEqual({ items: [], next_cursor: null });
  });

  it('filters by time: since inclusive, until exclusive', async () => {
    const { rows } = await services.runtime.pool.query(`SELECT occurred_at FROM audit_events WHERE type = 'token.issued' AND task_id = $1`, [taskId]);
    const at = (rows[0].occurred_at as Date).toISOString();
    const since = await api('GET', `/v1/audit?since=${at}&type=token.issued&task_id=${taskId}`);
    expect(since.body.items).toHaveLength(1);
    const until = await api('GET', `/v1/audit?until=${at}&type=token.issued&task_id=${taskId}`);
    expect(until.body.items).toHaveLength(0);
    const future = await api('GET', `/v1/audit?since=${new Date(Date.now() + 3_600_000).toISOString()}`);
    expect(future.body.items).toEqual([]);
  });

  it('reads since and until as exact instants: an offset is required, finer than a millisecond rounds up', async () => {
    const { rows } = await services.runtime.pool.query(`SELECT occurred_at FROM audit_events WHERE type = 'token.issued' AND task_id = $1`, [taskId]);
    const at = (rows[0].occurred_at as Date).toISOString();
    const count = async (query: string) => {
      const response = await api('GET', `/v1/audit?type=token.issued&task_id=${taskId}&${query}`, undefined, viewer);
      expect([query, response.status]).toEqual([query, 200]);
      return response.body.items.length;
    };
    // A time without offset would be read in the server's local zone: refused, naming the field.
    for (const field of ['since', 'until']) {
      const local = await api('GET', `/v1/audit?${field}=${at.slice(0, -1)}`, undefined, viewer);
      expect(local.status).toBe(400);
      expect(local.body.fields).toEqual([{ field, message: expect.stringMatching(/time zone offset/) }]);
      const exported = await http(`${services.adminUrl}/v1/audit/export?${field}=${at.slice(0, -1)}`, { headers: { authorization: `Bearer ${viewer}` } });
      expect(exported.status).toBe(400);
    }
    // The event's millisecond is before `at` + 0.1 ms: in `until`, out of `since` (truncating
    // the extra digits dropped it from the one and kept it in the other).
    const later = at.replace('Z', '1Z');
    expect(await count(`until=${encodeURIComponent(later)}`)).toBe(1);
    expect(await count(`since=${encodeURIComponent(later)}`)).toBe(0);
    // Microseconds and an explicit offset (as Python's isoformat writes them) name the same instant.
    const micro = at.replace('Z', '000+00:00');
    expect(await count(`since=${encodeURIComponent(micro)}`)).toBe(1);
    expect(await count(`until=${encodeURIComponent(micro)}`)).toBe(0);
    expect(await count(`since=${at.slice(0, 10)}`)).toBe(1);
  });

  it('refuses an ordinal date, which JavaScript misreads as a month in the local zone, naming the field', async () => {
    // ISO 8601 allows `YYYY-DDD` (2025-012 is 12 January) and the validator accepts it, but
    // Date reads it as 1 December 2025 in the server's zone: an export "since 12 January"
    // silently left out eleven months.
    for (const field of ['since', 'until']) {
      for (const path of ['/v1/audit', '/v1/audit/export']) {
        const response = await http(`${services.adminUrl}${path}?${field}=2025-012`, { headers: { authorization: `Bearer ${viewer}` } });
        expect([path, response.status]).toEqual([path, 400]);
        expect(response.body.fields).toEqual([{ field, message: expect.stringMatching(/calendar date/) }]);
      }
    }
    // Year, year-month and a calendar date stay midnight UTC, whatever the server's zone.
    for (const value of ['2025', '2025-01', '2025-01-12']) expect((await api('GET', `/v1/audit?since=${value}`, undefined, viewer)).status).toBe(200);
  });

  it('refuses invalid filters field by field', async () => {
    const response = await api('GET', '/v1/audit?since=yesterday&until=2025-13-45&limit=1001&outcome=maybe');
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect([...new Set(response.body.fields.map((entry: { field: string }) => entry.field))].sort()).toEqual(['limit', 'outcome', 'since', 'until']);
    const reversed = await api('GET', '/v1/audit?since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z');
    expect(reversed.body).toEqual({ error: 'invalid_request', message: 'the query is invalid', fields: [{ field: 'until', message: 'must be after since' }] });
    expect((await api('GET', '/v1/audit?cursor=eyJzIjotMX0')).body.fields).toEqual([{ field: 'cursor', message: 'is not a cursor of this list' }]);
    expect((await api('GET', '/v1/audit?limit=0')).status).toBe(400);
  });

  it('pages with an opaque cursor, without gaps or repeats', async () => {
    const total = Number((await services.runtime.pool.query('SELECT count(*) AS n FROM audit_events')).rows[0].n);
    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: TestResponse = await api('GET', `/v1/audit?limit=3${cursor ? `&cursor=${cursor}` : ''}`, undefined, viewer);
      expect(page.status).toBe(200);
      expect(page.body.items.length).toBeLessThanOrEqual(3);
      seen.push(...page.body.items.map((event: { seq: number }) => event.seq));
      cursor = page.body.next_cursor;
      if (cursor) expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
      pages += 1;
    } while (cursor && pages < 100);
    expect(seen).toEqual(Array.from({ length: total }, (_, i) => total - i));
  });

  it('verifies the chain', async () => {
    const verification = await api('GET', '/v1/audit/verify', undefined, viewer);
    expect(verification.status).toBe(200);
    const total = Number((await services.runtime.pool.query('SELECT count(*) AS n FROM audit_events')).rows[0].n);
    expect(verification.body).toEqual({ valid: true, events: total, checkpoints_verified: 0, last_checkpoint_seq: null });
  });

  it('exports matching events as NDJSON, oldest first', async () => {
    const everything = await exportLines();
    expect(everything.response.status).toBe(200);
    expect(everything.response.headers.get('content-type')).toMatch(/^application\/x-ndjson/);
    expect(everything.text.endsWith('\n')).toBe(true);
    const seqs = everything.records.map((record) => record.seq);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    const list = await api('GET', '/v1/audit?limit=1000');
    expect(everything.records).toEqual([...list.body.items].reverse());
    const filtered = await exportLines(`?agent_id=agent-1&type=grant.decision`);
    expect(filtered.records.map((record) => [record.agent_id, record.type, record.outcome])).toEqual([
      ['agent-1', 'grant.decision', 'success'],
      ['agent-1', 'grant.decision', 'denied'],
    ]);
    const none = await exportLines('?type=no.such.type');
    expect(none.response.status).toBe(200);
    expect(none.text).toBe('');
    const invalid = await http(`${services.adminUrl}/v1/audit/export?since=soon`, { headers: { authorization: `Bearer ${viewer}` } });
    expect(invalid.status).toBe(400);
    expect(invalid.body.fields).toEqual([{ field: 'since', message: expect.stringMatching(/ISO 8601/) }]);
    expect((await http(`${services.adminUrl}/v1/audit/export`)).status).toBe(401);
  });

  it('exports in ASCII: no reader splits a record at a Unicode line break, no bidi control reorders it on screen', async () => {
    const text = `pay acct_1\u2028{"forged":1}\u0085 next\u2029 \u202eusd 000,01\u202c caf\u00e9 \ud83d\ude00 del\u007f`;
    const [event] = await services.runtime.audit.record({ type: 'test.unicode', outcome: 'denied', actor: { type: 'agent', id: 'agent-1' }, data: { text } });
    const exported = await exportLines('?type=test.unicode');
    expect(exported.text).toMatch(/^[\x20-\x7e\n]+$/);
    // Python's str.splitlines() breaks lines at all of these as well as at \n.
    expect(exported.text.split(/\r\n|[\n\v\f\r\x1c-\x1e\x85\u2028\u2029]/)).toHaveLength(2);
    expect(exported.records).toEqual([{ ...event, data: { text } }]);
  });

  it('hashes a value as events store it, deterministically, for a viewer, without recording it', async () => {
    const before = Number((await services.runtime.pool.query('SELECT count(*) AS n FROM audit_events')).rows[0].n);
    const first = await api('POST', '/v1/audit/hash', { value: 'user-7@example.com' }, viewer);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({ hash: services.runtime.masterKey.auditHmac('user-7@example.com'), algorithm: 'hmac-sha256', previous_hashes: [] });
    expect(first.body.hash).toMatch(/^[0-9a-f]{64}$/);
    expect((await api('POST', '/v1/audit/hash', { value: 'user-7@example.com' }, viewer)).body).toEqual(first.body);
    expect((await api('POST', '/v1/audit/hash', { value: 'user-8@example.com' }, viewer)).body.hash).not.toBe(first.body.hash);
    expect((await api('POST', '/v1/audit/hash', { value: '' })).body.fields).toEqual([{ field: 'value', message: expect.any(String) }]);
    expect((await api('POST', '/v1/audit/hash', { value: 'x', salt: 'y' })).body.fields).toEqual([{ field: 'salt', message: 'unknown field' }]);
    const after = Number((await services.runtime.pool.query('SELECT count(*) AS n FROM audit_events')).rows[0].n);
    expect(after).toBe(before);
    const { rows } = await services.runtime.pool.query(`SELECT count(*)::int AS n FROM audit_events WHERE data::text LIKE '%user-7@example.com%'`);
    expect(rows[0].n).toBe(0);
  });

  it('notices a tampered chain', async () => {
    // The services cannot (they are not the owner): a superuser can.
    await expect(services.runtime.pool.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only')).rejects.toThrow(/owner/);
    const client = new Client({ connectionString: services.db.url });
    await client.connect();
    try {
      await client.query('ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only');
      await client.query(`UPDATE audit_events SET data = '{"forged": true}' WHERE seq = 2`);
      await client.query('ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only');
    } finally {
      await client.end();
    }
    const verification = await api('GET', '/v1/audit/verify');
    expect(verification.body).toMatchObject({ valid: false, first_invalid_seq: 2, reason: expect.stringMatching(/hash/) });
    const evidence = await api('GET', `/v1/tasks/${taskId}/evidence`);
    expect(evidence.body.chain).toMatchObject({ verified: false, reason: expect.stringMatching(/from event 2/) });
  });

  it('never ends an export that failed midway as if it were complete', async () => {
    // A row no writer of Writ could produce (data nested past what JavaScript serialises),
    // placed by a superuser after the first page: the export fails at it. Ending the response
    // cleanly there handed over a file that looked whole, every event after it silently left out.
    for (let n = 0; n < 1_050; n += 1)
      await services.runtime.audit.recordLater({ type: 'test.filler', outcome: 'info', actor: { type: 'system', id: 'spec' } });
    await services.runtime.audit.drain();
    expect(await nestDataAsSuperuser('(SELECT max(seq) - 5 FROM audit_events)')).toBe(1);
    const response = await fetch(`${services.adminUrl}/v1/audit/export`, { headers: { authorization: `Bearer ${viewer}` } });
    expect(response.status).toBe(200);
    await expect(response.text()).rejects.toThrow();
    // The service is still up, and the list holding that row still answers, naming it.
    expect((await api('GET', '/v1/audit?limit=1', undefined, viewer)).status).toBe(200);
    const page = await api('GET', '/v1/audit?limit=10&type=test.filler', undefined, viewer);
    expect(page.status).toBe(200);
    expect(page.body.items.filter((event: { data: { unreadable?: string } }) => event.data.unreadable?.includes('not written by Writ'))).toHaveLength(1);
  });

  it("answers a task's evidence when a superuser nested an event's data past what JSON serialises", async () => {
    expect(await nestDataAsSuperuser(`(SELECT min(seq) FROM audit_events WHERE task_id = $2 AND type = 'token.issued')`, [taskId])).toBe(1);
    const evidence = await api('GET', `/v1/tasks/${taskId}/evidence`, undefined, viewer);
    expect(evidence.status).toBe(200);
    expect(evidence.body.chain.verified).toBe(false);
    const issued = evidence.body.events.find((event: { type: string }) => event.type === 'token.issued');
    expect(issued.data).toEqual({ unreadable: expect.stringContaining('not written by Writ') });
    expect((await api('GET', `/v1/audit?task_id=${taskId}`, undefined, viewer)).status).toBe(200);
  });
});
