import { Client } from 'pg';
import { waitForLockWaiter } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, payoutUpTo, requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { undocumentedEventMembers } from './support/audit-docs';
import { sendJson, tokenRequest } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

/**
 * Human approvals attacked as a hijacked agent, a careless admin and the network: decisions
 * and redemptions raced on two instances, approvals presented for other details, tasks and
 * agents, decisions by tokens that may not decide, and a denied request asked again.
 */
describe('human approvals under attack', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;

  beforeAll(async () => {
    first = await startTestServices({ admin: createAdminApp });
    second = await startSecondInstance(first, { admin: createAdminApp });
    world = await seedWorld(first.runtime.pool);
    await requireApprovalAbove(first, 10000);
    await requireApprovalAbove(second, 10000);
  });
  afterAll(async () => {
    await second.close();
    await first.close();
  });

  const on = (index: number) => (index % 2 === 0 ? first : second);
  const exchange = (taskToken: string, details: unknown, extra: Record<string, string> = {}, at: TestServices = first, agent = world.agent) =>
    tokenRequest(at.issuer, agent, exchangeFields(taskToken, details, extra));
  const admin = (method: string, path: string, body?: unknown, at: TestServices = first, token = at.adminToken) =>
    sendJson(method, `${at.adminUrl}${path}`, body, token);

  /** A fresh task with one pending approval for a payout of `amount`. */
  async function pending(amount = 42000): Promise<{ task: Awaited<ReturnType<typeof createTask>>; id: string }> {
    const task = await createTask(first, world.orchestrator);
    const answer = await exchange(task.task_token, payoutUpTo(amount));
    expect(answer.body.error).toBe('authorization_pending');
    return { task, id: answer.body.approval_id as string };
  }

  const decisionEvents = async (id: string) =>
    (
      await first.runtime.pool.query<{ type: string }>(
        `SELECT type FROM audit_events WHERE type IN ('approval.approved', 'approval.denied') AND data->>'approval_id' = $1`,
        [id],
      )
    ).rows.map((row) => row.type);

  describe('races', () => {
    it('lets one of an approve and a deny fired at once on two instances win: one decision, one event, the loser 409', async () => {
      for (let round = 0; round < 4; round += 1) {
        const { id } = await pending();
        const [approve, deny] = await Promise.all([
          admin('POST', `/v1/approvals/${id}/approve`, {}, on(round)),
          admin('POST', `/v1/approvals/${id}/deny`, {}, on(round + 1)),
        ]);
        expect([approve.status, deny.status].sort()).toEqual([200, 409]);
        const winner = approve.status === 200 ? 'approved' : 'denied';
        expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe(winner);
        await first.runtime.audit.drain();
        await second.runtime.audit.drain();
        expect(await decisionEvents(id)).toEqual([`approval.${winner}`]);
      }
    });

    it('approves once when approved twice at once on two instances', async () => {
      const { id } = await pending();
      const answers = await Promise.all([0, 1, 2, 3].map((index) => admin('POST', `/v1/approvals/${id}/approve`, {}, on(index))));
      expect(answers.map((answer) => answer.status).sort()).toEqual([200, 409, 409, 409]);
      await first.runtime.audit.drain();
      await second.runtime.audit.drain();
      expect(await decisionEvents(id)).toEqual(['approval.approved']);
    });

    it('buys exactly one credential when the approved request is redeemed many times at once on two instances', async () => {
      const { task, id } = await pending();
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      const answers = await Promise.all(Array.from({ length: 6 }, (_, index) => exchange(task.task_token, payoutUpTo(42000), { approval_id: id }, on(index))));
      const granted = answers.filter((answer) => answer.status === 200);
      expect(granted).toHaveLength(1);
      for (const answer of answers.filter((candidate) => candidate.status !== 200)) expect(answer.body.error).toBe('access_denied');
      const { rows } = await first.runtime.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM access_tokens WHERE task_id = $1', [task.task_id]);
      expect(rows[0].n).toBe(1);
    });

    it('buys nothing once the approval expired, and an expired approval cannot be decided', async () => {
      const { task, id } = await pending();
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      await first.runtime.pool.query(`UPDATE approvals SET expires_at = now() - interval '1 second' WHERE id = $1`, [id]);
      const late = await exchange(task.task_token, payoutUpTo(42000), { approval_id: id });
      expect(late.body).toEqual({ error: 'access_denied', error_description: 'the approval has expired' });

      const other = await pending(43000);
      await first.runtime.pool.query(`UPDATE approvals SET expires_at = now() - interval '1 second' WHERE id = $1`, [other.id]);
      const decided = await admin('POST', `/v1/approvals/${other.id}/approve`, {});
      expect(decided.status).toBe(409);
      expect(decided.body.message).toContain('is expired, not pending');
    });

    it('buys nothing once the task ended', async () => {
      const { task, id } = await pending();
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      expect((await admin('POST', `/v1/tasks/${task.task_id}/revoke`, {})).status).toBe(200);
      const late = await exchange(task.task_token, payoutUpTo(42000), { approval_id: id });
      expect(late.status).toBe(400);
      expect(late.body.access_token).toBeUndefined();
      expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe('expired');
    });
  });

  describe('who decides', () => {
    it('refuses a viewer (403) and a revoked token (401), and decides nothing', async () => {
      const { id } = await pending();
      const viewer = (await admin('POST', '/v1/admin-tokens', { name: 'looker', role: 'viewer' })).body;
      const operator = (await admin('POST', '/v1/admin-tokens', { name: 'gone', role: 'operator' })).body;
      expect((await admin('DELETE', `/v1/admin-tokens/${operator.id}`)).status).toBe(204);
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {}, first, viewer.token)).status).toBe(403);
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {}, second, operator.token)).status).toBe(401);
      expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe('pending');
    });

    it('commits no decision made with a token whose revocation committed while the decision waited', async () => {
      const { id } = await pending();
      const stolen = (await admin('POST', '/v1/admin-tokens', { name: 'stolen', role: 'operator' })).body;
      // The decision, authenticated, waits for the audit chain head; the revocation (here from
      // another process) commits before the decision's transaction goes on.
      const holder = new Client({ connectionString: first.db.url });
      await holder.connect();
      try {
        await holder.query('BEGIN');
        await holder.query('SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE');
        const decision = admin('POST', `/v1/approvals/${id}/approve`, {}, first, stolen.token);
        await waitForLockWaiter(first.runtime.pool, 'the decision never waited for the chain head');
        await holder.query('UPDATE admin_tokens SET revoked_at = now() WHERE id = $1', [stolen.id]);
        await holder.query('COMMIT');
        const answer = await decision;
        expect(answer.status).toBe(401);
      } finally {
        await holder.end();
      }
      expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe('pending');
    });

    it.each([
      ['a lone surrogate', 'ok \ud800'],
      ['a NUL', 'ok \u0000'],
      ['501 characters', 'x'.repeat(501)],
      ['a number', 42],
    ])('refuses a note with %s (400 naming note) and leaves the approval pending', async (_name, note) => {
      const { id } = await pending();
      const answer = await admin('POST', `/v1/approvals/${id}/approve`, { note });
      expect(answer.status).toBe(400);
      expect(answer.text).toContain('note');
      expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe('pending');
    });
  });

  describe('binding', () => {
    it('buys only exactly the approved details: wider, elsewhere, or with more members, it buys nothing', async () => {
      const { task, id } = await pending(30000);
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      const wider = await exchange(task.task_token, payoutUpTo(30001), { approval_id: id });
      expect(wider.body.error).toBe('invalid_authorization_details');
      const elsewhere = [{ ...payoutUpTo(30000)[0], constraints: { destination: 'acct_2', amount_max: 30000, currency: 'usd' } }];
      expect((await exchange(task.task_token, elsewhere, { approval_id: id })).body.error).toBe('invalid_authorization_details');
      const moreMembers = [{ ...payoutUpTo(30000)[0], locations: ['https://elsewhere.example'] }];
      expect((await exchange(task.task_token, moreMembers, { approval_id: id })).status).toBe(400);
      const twoEntries = [...payoutUpTo(30000), ...payoutUpTo(30000)];
      expect((await exchange(task.task_token, twoEntries, { approval_id: id })).status).toBe(400);
      expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe('approved');
    });

    it.each([
      [
        'reordered members',
        '[{"constraints":{"currency":"usd","amount_max":30000,"destination":"acct_1"},"actions":["payouts.create"],"connector":"payments","type":"connector"}]',
      ],
      [
        '3e4',
        '[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"destination":"acct_1","amount_max":3e4,"currency":"usd"}}]',
      ],
      [
        '30000.0',
        '[{"type":"connector","connector":"payments","actions":["payouts.create"],"constraints":{"destination":"acct_1","amount_max":30000.0,"currency":"usd"}}]',
      ],
    ])('takes the same details written with %s as the same request, once', async (_name, text) => {
      const { task, id } = await pending(30000);
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      const granted = await exchange(task.task_token, text, { approval_id: id });
      expect(granted.status).toBe(200);
      expect(granted.body.authorization_details).toEqual(payoutUpTo(30000));
      expect((await exchange(task.task_token, text, { approval_id: id })).body.error).toBe('access_denied');
    });

    it("refuses another agent's approval, another task's, and ids that are not approvals", async () => {
      const { id } = await pending();
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      const theirs = await createTask(first, world.orchestrator, { agent_id: 'agent-2' });
      const foreign = await exchange(theirs.task_token, payoutUpTo(42000), { approval_id: id }, first, world.otherAgent);
      expect(foreign.body).toEqual({ error: 'invalid_grant', error_description: 'approval_id does not name an approval of this task' });
      const mine = await createTask(first, world.orchestrator);
      expect((await exchange(mine.task_token, payoutUpTo(42000), { approval_id: id })).body.error).toBe('invalid_grant');
      for (const guess of ['00000000-0000-4000-8000-000000000000', 'x', '-'.repeat(36), `${id} `]) {
        expect((await exchange(mine.task_token, payoutUpTo(42000), { approval_id: guess })).status).toBe(400);
      }
      expect((await admin('GET', `/v1/approvals/${id}`)).body.status).toBe('approved');
    });
  });

  describe('asking again', () => {
    it('refuses a request a person denied on this task, instead of asking them again', async () => {
      const { task, id } = await pending(35000);
      expect((await admin('POST', `/v1/approvals/${id}/deny`, { note: 'no' })).status).toBe(200);
      const again = await Promise.all([0, 1, 2].map((index) => exchange(task.task_token, payoutUpTo(35000), {}, on(index))));
      for (const answer of again) {
        expect(answer.status).toBe(400);
        expect(answer.body.error).toBe('access_denied');
        expect(answer.body.error_description).toContain('denied');
      }
      const { rows } = await first.runtime.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM approvals WHERE task_id = $1`, [task.task_id]);
      expect(rows[0].n).toBe(1);
      // Another request is asked as usual.
      expect((await exchange(task.task_token, payoutUpTo(34000))).body.error).toBe('authorization_pending');
    });

    it('answers a request approved and not yet used with that approval, not a second one to approve', async () => {
      const { task, id } = await pending(36000);
      expect((await admin('POST', `/v1/approvals/${id}/approve`, {})).status).toBe(200);
      const again = await exchange(task.task_token, payoutUpTo(36000));
      expect(again.body).toMatchObject({ error: 'authorization_pending', approval_id: id });
      expect((await admin('GET', `/v1/approvals?status=pending&task_id=${task.task_id}`)).body.items).toEqual([]);
      expect((await exchange(task.task_token, payoutUpTo(36000), { approval_id: id })).status).toBe(200);
      // Used: the next payout of the same amount is a new request for a person to decide.
      const next = await exchange(task.task_token, payoutUpTo(36000));
      expect(next.body.error).toBe('authorization_pending');
      expect(next.body.approval_id).not.toBe(id);
    });
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    await first.runtime.audit.drain();
    await second.runtime.audit.drain();
    expect(await undocumentedEventMembers(first.runtime.pool)).toEqual([]);
  });
});
