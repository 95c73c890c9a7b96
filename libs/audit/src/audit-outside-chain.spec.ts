import { Pool } from 'pg';
import { createTestDatabase, TestDatabase } from '@writ/testing';
import { AuditService } from './audit.service';
import { chainHash } from './audit-hash';

/**
 * Rows whose `seq` lies before where the chain starts (seq 1, or after the latest prune marker)
 * are no event Writ wrote: no writer appends there, and a prune deletes every row up to its
 * marker. Whoever may insert into `audit_events` (a superuser, or the services' own login, which
 * has INSERT) could otherwise add a self-consistent event there that the lists, exports and a
 * task's evidence show, while a walk that starts at seq 1 never reads it and reports the chain valid.
 */
describe('AuditService.verify: rows outside the chain', () => {
  let db: TestDatabase;
  let pool: Pool;
  let audit: AuditService;

  beforeEach(async () => {
    db = await createTestDatabase();
    pool = new Pool({ connectionString: db.url, max: 4 });
    audit = new AuditService(pool);
    for (let n = 0; n < 5; n += 1) {
      await audit.record({ type: 'test.event', outcome: 'success', actor: { type: 'system', id: 'spec' }, taskId: 'task-1', data: { n } });
    }
    expect((await audit.verify()).valid).toBe(true);
  });
  afterEach(async () => {
    await pool.end();
    await db.drop();
  });

  /** Inserts an event at `seq` whose hash recomputes from its own content and `prev_hash`, as a forger would. */
  async function forge(seq: number): Promise<void> {
    const body = {
      seq,
      id: '01890000-0000-7000-8000-000000000000',
      occurred_at: '2026-01-01T00:00:00.000Z',
      type: 'approval.approved',
      outcome: 'success' as const,
      actor_type: 'admin' as const,
      actor_id: 'someone-else',
      agent_id: null,
      task_id: 'task-1',
      connector_id: null,
      data: { note: 'forged' },
    };
    const prevHash = '0'.repeat(64);
    await pool.query(
      `INSERT INTO audit_events (seq, id, occurred_at, type, outcome, actor_type, actor_id, agent_id, task_id, connector_id, data, prev_hash, hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
      [
        seq,
        body.id,
        body.occurred_at,
        body.type,
        body.outcome,
        body.actor_type,
        body.actor_id,
        body.agent_id,
        body.task_id,
        body.connector_id,
        body.data,
        prevHash,
        chainHash(prevHash, body),
      ],
    );
  }

  it.each([0, -1, -9007199254740991])('reports an event inserted at seq %d, before the chain starts', async (seq) => {
    await forge(seq);
    // What the lists and a task's evidence show...
    expect((await audit.forTask('task-1')).map((record) => record.seq)[0]).toBe(seq);
    // ...the verification must not call valid, incremental or full.
    for (const verification of [await audit.verify(), await audit.verify({ incremental: true })]) {
      expect(verification).toMatchObject({ valid: false, first_invalid_seq: seq, reason: expect.stringMatching(/before the start of the chain/) });
    }
  });
});
