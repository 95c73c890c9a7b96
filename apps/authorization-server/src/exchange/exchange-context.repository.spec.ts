import { randomUUID } from 'node:crypto';
import { Pool } from 'pg';
import { ChangeListener } from '@writ/database';
import type { Runtime } from '@writ/platform';
import { createTestDatabase, insertTaskRow, TestDatabase } from '@writ/testing';
import { RowIntegrity } from '@writ/grants';
import { MasterKey } from '@writ/keys';
import { ExchangeContextRepository } from './exchange-context.repository';

describe('ExchangeContextRepository: task reads', () => {
  let db: TestDatabase;
  let pool: Pool;
  let repository: ExchangeContextRepository;
  let texts: string[];
  let failNext = false;
  const first = randomUUID();
  const second = randomUUID();
  const refused: string[] = [];
  const integrity = new RowIntegrity(new MasterKey(Buffer.alloc(32, 3)), (table, id) => refused.push(`${table}:${id}`));

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 2 });
    for (const [id, refusals] of [
      [first, 0],
      [second, 7],
    ] as const) {
      await insertTaskRow(pool, integrity, {
        id,
        agentId: 'agent-1',
        orchestratorId: 'orch-1',
        purpose: 'triage',
        allowed: [{ connector: 'github', actions: ['read'] }],
        metadata: { ticket: id },
        taskTokenJti: `jti-${id}`,
        refusals,
      });
    }
    // Never started: nothing is cached, every read goes to the database.
    const runtime = { changes: new ChangeListener({ connection: {} }), rowIntegrity: integrity } as unknown as Runtime;
    // The pool as the repository sees it: every query counted, the next one failed on demand.
    const counted = {
      query: (config: string | { text: string }, ...rest: unknown[]) => {
        texts.push(typeof config === 'string' ? config : config.text);
        if (failNext) {
          failNext = false;
          return Promise.reject(new Error('connection terminated'));
        }
        return (pool.query as (...args: unknown[]) => Promise<unknown>)(config, ...rest);
      },
    } as unknown as Pool;
    repository = new ExchangeContextRepository(counted, runtime);
  });
  afterAll(async () => {
    await pool.end();
    await db.drop();
  });

  beforeEach(() => {
    texts = [];
  });

  it('reads the tasks asked for in the same turn of the event loop in one query, each caller its own answer', async () => {
    const [a, b, again, missing, garbage, upper] = await Promise.all([
      repository.task(first),
      repository.task(second),
      repository.task(first),
      repository.task(randomUUID()),
      repository.task("not-a-uuid'); DROP TABLE tasks; --"),
      repository.task(second.toUpperCase()),
    ]);
    expect(texts).toHaveLength(1);
    expect(a).toMatchObject({ id: first, refusals: 0, status: 'active', metadata: { ticket: first } });
    expect(b).toMatchObject({ id: second, refusals: 7 });
    expect(upper).toMatchObject({ id: second, refusals: 7 });
    expect(again).toEqual(a);
    // Nothing shared between two callers of the same task: one's changes are not the other's.
    expect(again).not.toBe(a);
    expect(again!.allowed).not.toBe(a!.allowed);
    expect(again!.metadata).not.toBe(a!.metadata);
    expect(missing).toBeUndefined();
    expect(garbage).toBeUndefined();
  });

  it('reads again on every call: nothing is remembered', async () => {
    expect((await repository.task(second))!.refusals).toBe(7);
    await pool.query('UPDATE tasks SET refusals = 8, status = $2 WHERE id = $1', [second, 'revoked']);
    expect(await repository.task(second)).toMatchObject({ refusals: 8, status: 'revoked' });
    expect(texts.filter((text) => text.includes('FROM tasks'))).toHaveLength(2);
  });

  it('fails every read of a batch that the database fails, and reads again afterwards', async () => {
    failNext = true;
    const results = await Promise.allSettled([repository.task(first), repository.task(second)]);
    expect(results.map((result) => result.status)).toEqual(['rejected', 'rejected']);
    expect(texts).toHaveLength(1);
    expect(await repository.task(first)).toMatchObject({ id: first });
  });

  it('reads only ids that can name a task: only garbage costs no query', async () => {
    expect(await Promise.all([repository.task(''), repository.task('x'.repeat(10_000))])).toEqual([undefined, undefined]);
    expect(texts).toHaveLength(0);
  });

  it('refuses, as if it did not exist, a task whose tagged columns were changed outside Writ, or that has no tag', async () => {
    const widened = await insertTaskRow(pool, integrity, {
      agentId: 'agent-1',
      orchestratorId: 'orch-1',
      allowed: [{ connector: 'github', actions: ['read'] }],
    });
    const untagged = await insertTaskRow(pool, integrity, { agentId: 'agent-1', orchestratorId: 'orch-1' });
    expect(await repository.task(widened)).toMatchObject({ id: widened });
    await pool.query(`UPDATE tasks SET allowed = $2 WHERE id = $1`, [widened, JSON.stringify([{ connector: 'github', actions: ['read', 'write'] }])]);
    await pool.query(`UPDATE tasks SET integrity_tag = NULL WHERE id = $1`, [untagged]);
    refused.length = 0;
    expect(await Promise.all([repository.task(widened), repository.task(untagged), repository.task(first)])).toEqual([
      undefined,
      undefined,
      expect.objectContaining({ id: first }),
    ]);
    expect(refused.sort()).toEqual([`tasks:${untagged}`, `tasks:${widened}`].sort());
    // Counters and status are not covered: they change legitimately (and only ever narrow).
    await pool.query(`UPDATE tasks SET refusals = 3, status = 'completed', ended_at = now() WHERE id = $1`, [first]);
    expect(await repository.task(first)).toMatchObject({ refusals: 3, status: 'completed' });
  });
});
