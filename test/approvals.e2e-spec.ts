import { decodeJwt } from 'jose';
import { clientAuthFields } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, payoutUpTo, requireApprovalAbove, seedWorld, World } from './support/grant-flow';
import { dpopKey, proof } from './support/dpop';
import { postForm, sendJson, tokenRequest } from './support/oauth-client';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';
import { undocumentedEventMembers } from './support/audit-docs';

describe('human approval of risky grants', () => {
  let services: TestServices;
  let world: World;

  beforeAll(async () => {
    services = await startTestServices({ admin: createAdminApp });
    world = await seedWorld(services.runtime.pool);
    // Policy data (no recompilation): payouts above 100.00 USD need a human.
    await requireApprovalAbove(services, 10000);
  });
  afterAll(() => services.close());

  const exchange = (taskToken: string, details: unknown, extra: Record<string, string> = {}) =>
    tokenRequest(services.issuer, world.agent, exchangeFields(taskToken, details, extra));
  const admin = (method: string, path: string, body?: unknown) => sendJson(method, `${services.adminUrl}${path}`, body, services.adminToken);

  it('issues a payout under the threshold without asking anyone', async () => {
    const task = await createTask(services, world.orchestrator);
    expect((await exchange(task.task_token, payoutUpTo(5000))).status).toBe(200);
  });

  it('holds a payout above the threshold until an operator approves it, then issues exactly it, once', async () => {
    const task = await createTask(services, world.orchestrator);
    const pending = await exchange(task.task_token, payoutUpTo(42000));
    expect(pending.status).toBe(400);
    expect(pending.headers.get('cache-control')).toBe('no-store');
    expect(pending.body).toMatchObject({ error: 'authorization_pending', interval: 5 });
    expect(pending.body.error_description).toContain('above the approval threshold');
    const approvalId: string = pending.body.approval_id;
    expect(approvalId).toMatch(/^[0-9a-f-]{36}$/);

    const polled = await exchange(task.task_token, payoutUpTo(42000), { approval_id: approvalId });
    expect(polled.body).toMatchObject({ error: 'authorization_pending', approval_id: approvalId });

    const queue = await admin('GET', `/v1/approvals?status=pending&task_id=${task.task_id}`);
    expect(queue.status).toBe(200);
    expect(queue.body.items).toHaveLength(1);
    expect(queue.body.items[0]).toMatchObject({ id: approvalId, status: 'pending', agent_id: 'agent-1', authorization_details: payoutUpTo(42000) });

    const approved = await admin('POST', `/v1/approvals/${approvalId}/approve`, { note: 'invoice checked' });
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ status: 'approved', note: 'invoice checked' });
    expect((await admin('POST', `/v1/approvals/${approvalId}/deny`, {})).status).toBe(409);

    const widened = await exchange(task.task_token, payoutUpTo(50000), { approval_id: approvalId });
    expect(widened.status).toBe(400);
    expect(widened.body.error).toBe('invalid_authorization_details');

    const granted = await exchange(task.task_token, payoutUpTo(42000), { approval_id: approvalId });
    expect(granted.status).toBe(200);
    expect(granted.body.authorization_details).toEqual(payoutUpTo(42000));

    const again = await exchange(task.task_token, payoutUpTo(42000), { approval_id: approvalId });
    expect(again.status).toBe(400);
    expect(again.body).toEqual({ error: 'access_denied', error_description: 'the approval was already used' });

    await services.runtime.audit.drain();
    const { rows } = await services.runtime.pool.query(`SELECT type, actor_type FROM audit_events WHERE task_id = $1 AND type LIKE 'approval.%' ORDER BY seq`, [
      task.task_id,
    ]);
    expect(rows).toEqual([
      { type: 'approval.requested', actor_type: 'agent' },
      { type: 'approval.approved', actor_type: 'admin' },
      { type: 'approval.used', actor_type: 'agent' },
    ]);
  });

  it("answers access_denied once an operator denies, and refuses another task's approval", async () => {
    const task = await createTask(services, world.orchestrator);
    const pending = await exchange(task.task_token, payoutUpTo(30000));
    const approvalId: string = pending.body.approval_id;
    const other = await createTask(services, world.orchestrator);
    const foreign = await exchange(other.task_token, payoutUpTo(30000), { approval_id: approvalId });
    expect(foreign.body.error).toBe('invalid_grant');
    expect((await admin('POST', `/v1/approvals/${approvalId}/deny`, { note: 'not ours' })).body.status).toBe('denied');
    const denied = await exchange(task.task_token, payoutUpTo(30000), { approval_id: approvalId });
    expect(denied.body).toEqual({ error: 'access_denied', error_description: 'the approval was denied' });
    expect((await admin('GET', `/v1/approvals/${approvalId}`)).body).toMatchObject({ status: 'denied', note: 'not ours' });
  });

  it('does not let an approval cover a request outside the task', async () => {
    const task = await createTask(services, world.orchestrator);
    const outside = await exchange(task.task_token, payoutUpTo(60000));
    expect(outside.status).toBe(400);
    expect(outside.body.error).toBe('invalid_authorization_details');
  });

  it('binds an approval to the DPoP key it was asked with: another key, or none, buys nothing with it', async () => {
    // The operator approved a credential bound to the agent's key: whoever holds the agent's
    // client key and task token but not its DPoP key (or a bearer downgrade) gets nothing.
    const [key, other] = [await dpopKey(), await dpopKey()];
    const tokenUrl = `${services.issuer}/oauth2/token`;
    const exchangeWith = async (taskToken: string, signer: typeof key | undefined, extra: Record<string, string> = {}) =>
      postForm(
        tokenUrl,
        { ...exchangeFields(taskToken, payoutUpTo(42000), extra), ...(await clientAuthFields(world.agent.id, world.agent.key, services.issuer)) },
        signer ? { dpop: await proof(signer, 'POST', tokenUrl) } : {},
      );
    const task = await createTask(services, world.orchestrator);
    const pending = await exchangeWith(task.task_token, key);
    expect(pending.body).toMatchObject({ error: 'authorization_pending' });
    const approvalId: string = pending.body.approval_id;
    // The same request under another key is another request: it is asked on its own.
    const otherPending = await exchangeWith(task.task_token, other);
    expect(otherPending.body).toMatchObject({ error: 'authorization_pending' });
    expect(otherPending.body.approval_id).not.toBe(approvalId);
    expect((await admin('POST', `/v1/approvals/${approvalId}/approve`, {})).status).toBe(200);

    for (const signer of [other, undefined]) {
      const refused = await exchangeWith(task.task_token, signer, { approval_id: approvalId });
      expect(refused.status).toBe(400);
      expect(refused.body).toEqual({ error: 'invalid_grant', error_description: 'the approval was asked for with another DPoP key (or none)' });
    }
    const granted = await exchangeWith(task.task_token, key, { approval_id: approvalId });
    expect(granted.status).toBe(200);
    expect(granted.body.token_type).toBe('DPoP');
    expect(decodeJwt(granted.body.access_token).cnf).toEqual({ jkt: key.jkt });

    // Asked without a key, an approval buys no key-bound credential either (nor one for a stolen key).
    const bearerTask = await createTask(services, world.orchestrator);
    const bearerId: string = (await exchangeWith(bearerTask.task_token, undefined)).body.approval_id;
    expect((await admin('POST', `/v1/approvals/${bearerId}/approve`, {})).status).toBe(200);
    expect((await exchangeWith(bearerTask.task_token, other, { approval_id: bearerId })).body.error).toBe('invalid_grant');
    const bearer = await exchangeWith(bearerTask.task_token, undefined, { approval_id: bearerId });
    expect(bearer.status).toBe(200);
    expect(bearer.body.token_type).toBe('Bearer');
  });

  describe('against approval fatigue (a hijacked agent flooding the people who decide)', () => {
    it('holds across two instances: one approval per request, ten pending per task, fired in parallel at both', async () => {
      const second = await startSecondInstance(services);
      try {
        await requireApprovalAbove(second, 10000);
        const task = await createTask(services, world.orchestrator);
        const at = (index: number, amount: number) =>
          tokenRequest(index % 2 === 0 ? services.issuer : second.issuer, world.agent, exchangeFields(task.task_token, payoutUpTo(amount)));
        const same = await Promise.all(Array.from({ length: 6 }, (_, index) => at(index, 33000)));
        expect(new Set(same.map((answer) => answer.body.approval_id)).size).toBe(1);
        const distinct = await Promise.all(Array.from({ length: 14 }, (_, index) => at(index, 40001 + index)));
        const errors = distinct.map((answer) => answer.body.error as string);
        expect(errors.filter((error) => error === 'authorization_pending')).toHaveLength(9);
        expect(errors.filter((error) => error === 'access_denied')).toHaveLength(5);
        expect((await admin('GET', `/v1/approvals?status=pending&task_id=${task.task_id}`)).body.items).toHaveLength(10);
      } finally {
        await second.close();
      }
    });

    it('asks the same approval once however often it is repeated, also in parallel', async () => {
      const task = await createTask(services, world.orchestrator);
      const answers = await Promise.all(Array.from({ length: 6 }, () => exchange(task.task_token, payoutUpTo(31000))));
      for (const answer of answers) expect(answer.body).toMatchObject({ error: 'authorization_pending' });
      const ids = new Set(answers.map((answer) => answer.body.approval_id));
      expect(ids.size).toBe(1);
      const queue = await admin('GET', `/v1/approvals?status=pending&task_id=${task.task_id}`);
      expect(queue.body.items.map((item: { id: string }) => item.id)).toEqual([...ids]);
      await services.runtime.audit.drain();
      const { rows } = await services.runtime.pool.query<{ repeated: boolean | null }>(
        `SELECT (data->>'repeated')::boolean AS repeated FROM audit_events WHERE task_id = $1 AND type = 'approval.requested' ORDER BY seq`,
        [task.task_id],
      );
      expect(rows.map((row) => row.repeated)).toEqual([null, true, true, true, true, true]);
    });

    it('refuses requests past ten pending on one task, also fired in parallel, and records each refusal', async () => {
      const task = await createTask(services, world.orchestrator);
      const answers = await Promise.all(Array.from({ length: 14 }, (_, index) => exchange(task.task_token, payoutUpTo(20001 + index))));
      const pending = answers.filter((answer) => answer.body.error === 'authorization_pending');
      const refused = answers.filter((answer) => answer.body.error === 'access_denied');
      expect(pending).toHaveLength(10);
      expect(refused).toHaveLength(4);
      for (const answer of refused) {
        expect(answer.status).toBe(400);
        expect(answer.body.error_description).toContain('10 approval requests pending');
      }
      expect((await admin('GET', `/v1/approvals?status=pending&task_id=${task.task_id}`)).body.items).toHaveLength(10);

      // A decision frees a place; another task is not affected.
      expect((await admin('POST', `/v1/approvals/${pending[0].body.approval_id}/deny`, {})).status).toBe(200);
      expect((await exchange(task.task_token, payoutUpTo(29999))).body.error).toBe('authorization_pending');
      expect((await exchange(task.task_token, payoutUpTo(29998))).body.error).toBe('access_denied');
      const other = await createTask(services, world.orchestrator);
      expect((await exchange(other.task_token, payoutUpTo(20001))).body.error).toBe('authorization_pending');

      await services.runtime.audit.drain();
      const { rows } = await services.runtime.pool.query<{ type: string; outcome: string; n: string }>(
        `SELECT type, outcome, count(*) AS n FROM audit_events WHERE task_id = $1 AND type IN ('approval.requested', 'approval.refused', 'grant.decision')
          GROUP BY type, outcome ORDER BY type`,
        [task.task_id],
      );
      expect(rows).toEqual([
        { type: 'approval.refused', outcome: 'denied', n: '5' },
        { type: 'approval.requested', outcome: 'info', n: '11' },
        { type: 'grant.decision', outcome: 'info', n: '16' },
      ]);
    });
  });

  // Policy data is the operator's: a rule written `"actions": "payouts.create"` (not a list)
  // applied to no action, so every payout was issued without the approval it asked for.
  it.each([
    ['actions that is not a list', { payments: { constraint: 'amount_max', above: 10000, actions: 'payouts.create' } }],
    ['a rule that is a string', { payments: 'amount_max above 10000' }],
    ['rules without their connector', [{ constraint: 'amount_max', above: 10000 }]],
  ])('holds every payout for approval under a malformed approval rule: %s', async (_name, approval) => {
    const engine = services.policy.current();
    const data = JSON.parse(JSON.stringify(engine.data)) as { writ: { config: Record<string, unknown> } };
    data.writ.config.approval = approval;
    services.policy.install(await engine.withData(data), 'test');
    try {
      const task = await createTask(services, world.orchestrator);
      const held = await exchange(task.task_token, payoutUpTo(42000));
      expect(held.status).toBe(400);
      expect(held.body).toMatchObject({ error: 'authorization_pending' });
      expect(held.body.error_description).toContain('an approval rule for connector payments is malformed');
    } finally {
      services.policy.install(engine, 'test');
    }
  });

  // Last: what every test above recorded. docs/audit.md is the reference the log is queried by.
  it('records no event member docs/audit.md does not name for its type', async () => {
    expect(await undocumentedEventMembers(services.runtime.pool)).toEqual([]);
  });
});
