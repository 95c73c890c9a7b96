import { Client, type Pool } from 'pg';
import type { AuditService } from '@writ/audit';
import { REVOKED_JTIS_PER_EVENT } from '@writ/grants';
import { waitForLockWaiter } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { SweeperService } from '../apps/authorization-server/src/background/sweeper.service';
import { createGatewayApp } from '../apps/connector-gateway/src/connector-gateway.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, seedWorld, tasksToken, World } from './support/grant-flow';
import { MockUpstream, startPaymentsUpstream } from './support/mock-upstreams';
import { http, sendJson, tokenRequest } from './support/oauth-client';
import { seedAgent, seedOrchestrator, setConnectorCredential } from './support/seed';
import { startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

const SECRET = 'sk_live_task_end_evidence_7c1d';

interface ChainRow {
  seq: string;
  type: string;
  outcome: string;
  actor_type: string;
  actor_id: string | null;
  task_id: string | null;
  data: Record<string, unknown>;
}

/**
 * What an auditor reading the chain in `seq` order would find out of order: a `gateway.call`
 * success for a credential after the `token.revoked` that revoked it, or after the end of its
 * task. Every spend that succeeded ran before the revocation (one statement re-checks it under
 * the chain-head lock), so the evidence must read so.
 */
async function evidenceOutOfOrder(pool: Pool): Promise<string[]> {
  const { rows } = await pool.query<ChainRow>(`SELECT seq, type, outcome, actor_type, actor_id, task_id, data FROM audit_events ORDER BY seq`);
  const revokedAt = new Map<string, string>();
  const endedAt = new Map<string, string>();
  const problems: string[] = [];
  for (const row of rows) {
    if (row.type === 'token.revoked') for (const jti of row.data.jtis as string[]) revokedAt.set(jti, row.seq);
    if (/^task\.(completed|failed|expired|revoked)$/.test(row.type) && row.task_id) endedAt.set(row.task_id, row.seq);
    if (row.type !== 'gateway.call' || row.outcome !== 'success') continue;
    const jti = row.data.jti as string;
    if (revokedAt.has(jti)) problems.push(`gateway.call success at seq ${row.seq} after the token.revoked of its credential at seq ${revokedAt.get(jti)}`);
    if (row.task_id && endedAt.has(row.task_id))
      problems.push(`gateway.call success at seq ${row.seq} after the end of its task at seq ${endedAt.get(row.task_id)}`);
  }
  return problems;
}

/**
 * The evidence of a task's end, as an auditor reads it: the audit chain must list what ran in
 * the order it ran (a spend that ran before the end is chained before it, even when both
 * committed in one audit batch), a task ended past its deadline is `expired` (never `completed`
 * after the fact), and the revocation of thousands of credentials is recorded whole in events
 * of bounded size.
 */
describe('the evidence of a task end', () => {
  let services: TestServices;
  let world: World;
  let upstream: MockUpstream;
  let orchestratorToken: string;

  beforeAll(async () => {
    upstream = await startPaymentsUpstream(SECRET);
    services = await startTestServices({ gateway: createGatewayApp, admin: createAdminApp });
    // Deadlines here are met by the end path alone: the background sweep would race it.
    services.apps[0].get(SweeperService).onApplicationShutdown();
    world = await seedWorld(services.runtime.pool, upstream.url);
    await setConnectorCredential(services.runtime.pool, services.runtime.masterKey, 'payments', { type: 'bearer', token: SECRET });
    orchestratorToken = await tasksToken(services, world.orchestrator);
  });
  afterAll(async () => {
    await services.close();
    await upstream.close();
  });

  const credential = async (taskToken: string): Promise<string> => {
    const response = await tokenRequest(services.issuer, world.agent, exchangeFields(taskToken, PAYOUT_REQUEST));
    if (response.status !== 200) throw new Error(`token exchange failed: ${response.text}`);
    return response.body.access_token as string;
  };
  const pay = (token: string) =>
    http(`${services.gatewayUrl}/connectors/payments/v1/payouts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ destination: 'acct_1', amount: 42000, currency: 'usd' }),
    });
  const end = (taskId: string, how: 'complete' | 'fail' = 'complete') =>
    sendJson('POST', `${services.issuer}/v1/tasks/${taskId}/${how}`, undefined, orchestratorToken);
  const eventsOf = async (taskId: string) =>
    (
      await services.runtime.pool.query<ChainRow>(
        `SELECT seq, type, outcome, actor_type, actor_id, task_id, data FROM audit_events WHERE task_id = $1 ORDER BY seq`,
        [taskId],
      )
    ).rows;
  /** Units waiting in this process's audit queue (behind a batch in flight): the hook that orders a batch. */
  const queued = (audit: AuditService) => (audit as unknown as { queue: unknown[] }).queue.length;
  const until = async (what: string, condition: () => boolean) => {
    for (let attempt = 0; attempt < 500 && !condition(); attempt += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    if (!condition()) throw new Error(what);
  };

  describe('order of a spend and a task end', () => {
    it('chains a spend before the end it ran before when both commit in one audit batch, the end queued first', async () => {
      const task = await createTask(services, world.orchestrator);
      const token = await credential(task.task_token);
      const audit = services.runtime.audit;
      // A batch in flight waits for the chain head, which this test holds: the end, then the
      // call, queue behind it and commit together in the next batch, in that order.
      const holder = new Client({ connectionString: services.db.url });
      await holder.connect();
      let completed: ReturnType<typeof end>;
      let paid: ReturnType<typeof pay>;
      try {
        await holder.query('BEGIN');
        await holder.query('SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE');
        const barrier = audit.record({ type: 'test.barrier', outcome: 'info', actor: { type: 'system', id: 'test' } });
        await waitForLockWaiter(services.runtime.pool, 'the first audit batch never waited for the chain head');
        completed = end(task.task_id);
        await until('the task end was never queued', () => queued(audit) >= 1);
        paid = pay(token);
        await until('the spend was never queued', () => queued(audit) >= 2);
        await holder.query('COMMIT');
        await barrier;
      } finally {
        await holder.end();
      }
      // The spend ran first in the batch (batched work runs in the message that locks the head):
      // the call was allowed, and the end revoked the credential after it.
      expect((await paid).status).toBe(201);
      expect((await completed).body.status).toBe('completed');
      // The upstream's answer is recorded after the call, with a later batch.
      await audit.drain();
      const events = await eventsOf(task.task_id);
      const types = events.map((event) => event.type);
      expect(types).toEqual(['task.created', 'grant.decision', 'token.issued', 'gateway.call', 'task.completed', 'token.revoked', 'gateway.upstream']);
      expect(await evidenceOutOfOrder(services.runtime.pool)).toEqual([]);
      expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
    });

    it('never chains a call allowed after its task ended, however the two race', async () => {
      const rounds = 20;
      const tasks = await Promise.all(Array.from({ length: rounds }, () => createTask(services, world.orchestrator)));
      const tokens = await Promise.all(tasks.map((task) => credential(task.task_token)));
      let allowed = 0;
      for (const [round, task] of tasks.entries()) {
        // Fired in the same tick: they meet in one batch, or in two in either order.
        const [completed, paid] = await Promise.all([end(task.task_id), pay(tokens[round])]);
        expect(completed.status).toBe(200);
        expect(completed.body.status).toBe('completed');
        expect([201, 401]).toContain(paid.status);
        const types = (await eventsOf(task.task_id)).map((event) => `${event.type}:${event.outcome}`);
        if (paid.status === 201) {
          allowed += 1;
          expect(types.indexOf('gateway.call:success')).toBeLessThan(types.indexOf('task.completed:success'));
        } else {
          expect(types).not.toContain('gateway.call:success');
        }
      }
      expect(allowed).toBeLessThanOrEqual(rounds);
      expect(await evidenceOutOfOrder(services.runtime.pool)).toEqual([]);
      expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
    });
  });

  describe('an end asked for after the deadline', () => {
    it('expires the task instead, as the sweep would, and answers with the task as it is', async () => {
      const asked = ['complete', 'fail', 'revoke'] as const;
      const tasks: Array<Awaited<ReturnType<typeof createTask>>> = [];
      const tokens: string[] = [];
      for (const _ of asked) {
        tasks.push(await createTask(services, world.orchestrator, { ttl_seconds: 3 }));
        tokens.push(await credential(tasks[tasks.length - 1].task_token));
      }
      const deadline = Math.max(...tasks.map((task) => Date.parse(task.expires_at)));
      await new Promise((resolve) => setTimeout(resolve, deadline - Date.now() + 100));
      // Not swept: the tasks still read active in the database until something ends them.
      const { rows: before } = await services.runtime.pool.query(`SELECT count(*)::int AS n FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'active'`, [
        tasks.map((task) => task.task_id),
      ]);
      expect(before[0].n).toBe(asked.length);

      const answers = [
        await end(tasks[0].task_id, 'complete'),
        await end(tasks[1].task_id, 'fail'),
        await sendJson('POST', `${services.adminUrl}/v1/tasks/${tasks[2].task_id}/revoke`, { reason: 'too late' }, services.adminToken),
      ];
      for (const answer of answers) {
        expect(answer.status).toBe(200);
        expect(answer.body).toMatchObject({ status: 'expired', status_reason: 'deadline passed', ended_at: expect.any(String) });
        expect(answer.body.grants.map((grant: { state: string }) => grant.state)).toEqual(['revoked']);
      }
      // Ending it again changes nothing: the task as it is.
      const again = await end(tasks[0].task_id, 'complete');
      expect(again.status).toBe(200);
      expect(again.body.status).toBe('expired');

      const requestedBy = [
        { type: 'orchestrator', id: 'orch-1' },
        { type: 'orchestrator', id: 'orch-1' },
        { type: 'admin', id: expect.any(String) },
      ];
      for (const [index, task] of tasks.entries()) {
        const events = await eventsOf(task.task_id);
        expect(events.map((event) => event.type)).toEqual(['task.created', 'grant.decision', 'token.issued', 'task.expired', 'token.revoked']);
        const [expired, revoked] = events.slice(3);
        expect(expired).toMatchObject({ actor_type: 'system', actor_id: 'task-deadline' });
        expect(expired.data).toEqual({
          status: 'expired',
          reason: 'deadline passed',
          requested_status: ['completed', 'failed', 'revoked'][index],
          requested_by: requestedBy[index],
        });
        expect(revoked).toMatchObject({ actor_type: 'system', actor_id: 'task-deadline' });
        expect(revoked.data).toEqual({ reason: 'task expired', jtis: [expect.any(String)], count: 1 });
      }
      const { rows: credentials } = await services.runtime.pool.query(`SELECT revoked_reason FROM access_tokens WHERE task_id = ANY($1::uuid[])`, [
        tasks.map((task) => task.task_id),
      ]);
      expect(credentials.map((row) => row.revoked_reason)).toEqual(['task expired', 'task expired', 'task expired']);
      // Revoked with their task: the gateway refuses them.
      for (const token of tokens) expect((await pay(token)).status).toBe(401);
      expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
    });

    it('expires, not revokes, the tasks past their deadline of an agent being deleted', async () => {
      await seedAgent(services.runtime.pool, 'agent-late');
      const orchestrator = await seedOrchestrator(services.runtime.pool, 'orch-late', ['agent-late']);
      const late = await createTask(services, orchestrator, { agent_id: 'agent-late', ttl_seconds: 1 });
      const live = await createTask(services, orchestrator, { agent_id: 'agent-late', ttl_seconds: 600 });
      await new Promise((resolve) => setTimeout(resolve, Date.parse(late.expires_at) - Date.now() + 100));
      const deleted = await sendJson('DELETE', `${services.adminUrl}/v1/agents/agent-late`, undefined, services.adminToken);
      expect(deleted.status).toBe(204);
      const { rows } = await services.runtime.pool.query(`SELECT id, status, status_reason FROM tasks WHERE agent_id = 'agent-late'`);
      expect(Object.fromEntries(rows.map((row) => [row.id, [row.status, row.status_reason]]))).toEqual({
        [late.task_id]: ['expired', 'deadline passed'],
        [live.task_id]: ['revoked', 'agent deleted'],
      });
      const events = await services.runtime.pool.query<ChainRow>(
        `SELECT seq, type, outcome, actor_type, actor_id, task_id, data FROM audit_events
          WHERE agent_id = 'agent-late' AND type IN ('admin.agent.deleted', 'task.revoked', 'task.expired') ORDER BY seq`,
      );
      const byType = Object.fromEntries(events.rows.map((row) => [row.type, row]));
      expect(byType['admin.agent.deleted'].data).toEqual({ tasks_revoked: [live.task_id], tasks_expired: [late.task_id], tokens_revoked: 0 });
      expect(byType['task.revoked']).toMatchObject({ task_id: live.task_id, actor_type: 'admin', data: { status: 'revoked', reason: 'agent deleted' } });
      expect(byType['task.expired']).toMatchObject({
        task_id: late.task_id,
        actor_type: 'system',
        actor_id: 'task-deadline',
        data: { status: 'expired', reason: 'deadline passed', requested_status: 'revoked', requested_by: { type: 'admin' } },
      });
    });

    it('completes a task ended before its deadline', async () => {
      const task = await createTask(services, world.orchestrator, { ttl_seconds: 600 });
      const completed = await end(task.task_id);
      expect(completed.body).toMatchObject({ status: 'completed', status_reason: 'completed by orchestrator' });
      const events = await eventsOf(task.task_id);
      expect(events.map((event) => [event.type, event.actor_type])).toEqual([
        ['task.created', 'orchestrator'],
        ['task.completed', 'orchestrator'],
      ]);
      expect(events[1].data).toEqual({ status: 'completed', reason: 'completed by orchestrator' });
    });
  });

  describe('a task with thousands of credentials', () => {
    it('records every revoked jti, in token.revoked events of at most REVOKED_JTIS_PER_EVENT each', async () => {
      const total = 2_500;
      const task = await createTask(services, world.orchestrator);
      // One credential issued the owner's way; the others are copies of its row (2,500
      // exchanges over HTTP would take minutes), each with its own jti.
      const first = await credential(task.task_token);
      expect(first).toEqual(expect.any(String));
      await services.runtime.pool.query(
        `INSERT INTO access_tokens (jti, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, cnf_jkt,
                                    policy_version, max_uses, issued_at, expires_at, budget_entries)
         SELECT gen_random_uuid()::text, kind, client_id, subject, task_id, connector_id, action, risk, authorization_details, scope, cnf_jkt,
                policy_version, max_uses, issued_at, expires_at, budget_entries
           FROM access_tokens, generate_series(2, $2::int) WHERE task_id = $1`,
        [task.task_id, total],
      );
      const { rows: issued } = await services.runtime.pool.query<{ jti: string }>(`SELECT jti FROM access_tokens WHERE task_id = $1`, [task.task_id]);
      expect(issued).toHaveLength(total);

      const completed = await end(task.task_id);
      expect(completed.status).toBe(200);
      expect(completed.body.status).toBe('completed');

      const events = await eventsOf(task.task_id);
      const ending = events.slice(events.findIndex((event) => event.type === 'task.completed'));
      const revoked = ending.slice(1);
      const parts = Math.ceil(total / REVOKED_JTIS_PER_EVENT);
      expect(revoked.map((event) => event.type)).toEqual(Array(parts).fill('token.revoked'));
      // Consecutive, right after the end, in one transaction.
      ending.forEach((event, index) => expect(Number(event.seq)).toBe(Number(ending[0].seq) + index));
      revoked.forEach((event, index) => {
        expect(event).toMatchObject({ actor_type: 'orchestrator', actor_id: 'orch-1' });
        expect(event.data).toMatchObject({ reason: 'task completed', count: total, part: index + 1, parts });
        expect((event.data.jtis as string[]).length).toBeLessThanOrEqual(REVOKED_JTIS_PER_EVENT);
      });
      const listed = revoked.flatMap((event) => event.data.jtis as string[]);
      expect(listed).toHaveLength(total);
      expect(new Set(listed)).toEqual(new Set(issued.map((row) => row.jti)));
      const { rows: live } = await services.runtime.pool.query(`SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1 AND revoked_at IS NULL`, [
        task.task_id,
      ]);
      expect(live[0].n).toBe(0);
      // Each jti is findable in the log by the usual query.
      const { rows: found } = await services.runtime.pool.query(
        `SELECT count(*)::int AS n FROM audit_events WHERE type = 'token.revoked' AND data->'jtis' ? $1`,
        [issued[issued.length - 1].jti],
      );
      expect(found[0].n).toBe(1);
      expect(await services.runtime.audit.verify()).toMatchObject({ valid: true });
    });
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
