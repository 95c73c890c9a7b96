import { clientAuthFields, createClientKey, jwksOf, retagRow, waitForLockWaiter } from '@writ/testing';
import { createAdminApp } from '../apps/admin/src/admin.app';
import { createTask, exchangeFields, PAYOUT_REQUEST, payoutUpTo, requireApprovalAbove, seedWorld, tasksToken, World } from './support/grant-flow';
import { postForm, sendJson, TestClient } from './support/oauth-client';
import { seedAgent } from './support/seed';
import { startSecondInstance, startTestServices, TestServices } from './support/test-services';

const EVIL = [
  { type: 'connector', connector: 'payments', actions: ['payouts.create'], constraints: { destination: 'acct_evil', amount_max: 1, currency: 'usd' } },
];

/**
 * The grant path under concurrency, against two authorization-server instances over one
 * database: every check-then-act on a task (refusal counter and quarantine, issuance against
 * a task being ended, approvals decided and consumed) holds when requests race.
 */
describe('grant path under concurrency, across two authorization-server instances', () => {
  let first: TestServices;
  let second: TestServices;
  let world: World;

  beforeAll(async () => {
    first = await startTestServices({ admin: createAdminApp });
    second = await startSecondInstance(first);
    world = await seedWorld(first.runtime.pool);
  });
  afterAll(async () => {
    await second.close();
    await first.close();
  });

  /** A token request to instance `n % 2`, authenticated for the shared issuer. */
  const exchangeAt = async (n: number, taskToken: string, details: unknown, extra: Record<string, string> = {}, agent: TestClient = world.agent) =>
    postForm(`${n % 2 ? second.authUrl : first.authUrl}/oauth2/token`, {
      ...exchangeFields(taskToken, details, extra),
      ...(await clientAuthFields(agent.id, agent.key, first.issuer)),
    });
  const taskRow = async (taskId: string) =>
    (await first.runtime.pool.query('SELECT status, status_reason, refusals, out_of_purpose_requests FROM tasks WHERE id = $1', [taskId])).rows[0];
  const liveCredentials = async (taskId: string) =>
    Number((await first.runtime.pool.query('SELECT count(*) FROM access_tokens WHERE task_id = $1 AND revoked_at IS NULL', [taskId])).rows[0].count);

  it('quarantines the task when 20 out-of-purpose exchanges arrive at once, and refuses the next in-purpose one', async () => {
    const task = await createTask(first, world.orchestrator);
    const good = await exchangeAt(0, task.task_token, PAYOUT_REQUEST);
    expect(good.status).toBe(200);

    const results = await Promise.all(Array.from({ length: 20 }, (_, n) => exchangeAt(n, task.task_token, EVIL)));
    for (const result of results) expect(result.status).toBe(400);
    expect(results.filter((result) => result.body.error === 'invalid_authorization_details').length).toBeGreaterThanOrEqual(3);
    // The refusal that quarantined says so to the agent (those racing it may too: the audit below counts the real one).
    expect(results.filter((result) => /quarantine/.test(result.body.error_description)).length).toBeGreaterThanOrEqual(1);

    const row = await taskRow(task.task_id);
    expect(row.status).toBe('revoked');
    expect(row.status_reason).toMatch(/quarantine/);
    // Requests that read the task after the quarantine are refused as invalid_grant, uncounted.
    expect(row.out_of_purpose_requests).toBeGreaterThanOrEqual(3);
    expect(await liveCredentials(task.task_id)).toBe(0);
    for (const n of [0, 1]) {
      const after = await exchangeAt(n, task.task_token, PAYOUT_REQUEST);
      expect(after.status).toBe(400);
      expect(after.body.error).toBe('invalid_grant');
    }
    // Quarantined once, by the third out-of-purpose request: one task.revoked event.
    await first.runtime.audit.drain();
    await second.runtime.audit.drain();
    const { rows } = await first.runtime.pool.query(`SELECT actor_id FROM audit_events WHERE task_id = $1 AND type = 'task.revoked'`, [task.task_id]);
    expect(rows).toEqual([{ actor_id: 'policy' }]);
    const decisions = await first.runtime.pool.query(
      `SELECT count(*) FILTER (WHERE (data->'decision'->>'quarantine')::boolean) AS quarantining FROM audit_events
        WHERE task_id = $1 AND type = 'grant.decision' AND outcome = 'denied'`,
      [task.task_id],
    );
    expect(Number(decisions.rows[0].quarantining)).toBe(1);
  });

  it('never leaves a live credential on a task quarantined while in-purpose exchanges race the out-of-purpose ones', async () => {
    const task = await createTask(first, world.orchestrator);
    const mixed = Array.from({ length: 24 }, (_, n) => (n % 3 === 0 ? PAYOUT_REQUEST : EVIL));
    const results = await Promise.all(mixed.map((details, n) => exchangeAt(n, task.task_token, details)));
    expect(results.filter((result) => result.status === 200).length).toBeLessThanOrEqual(8);
    expect((await taskRow(task.task_id)).status).toBe('revoked');
    expect(await liveCredentials(task.task_id)).toBe(0);
  });

  it('leaves no live credential when the orchestrator completes the task while exchanges race it', async () => {
    const task = await createTask(first, world.orchestrator);
    const bearer = await tasksToken(first, world.orchestrator);
    const [completed, ...exchanges] = await Promise.all([
      sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, bearer),
      ...Array.from({ length: 12 }, (_, n) => exchangeAt(n, task.task_token, PAYOUT_REQUEST)),
    ]);
    expect(completed.status).toBe(200);
    for (const exchange of exchanges) expect([200, 400]).toContain(exchange.status);
    expect((await taskRow(task.task_id)).status).toBe('completed');
    expect(await liveCredentials(task.task_id)).toBe(0);
    // Completing again, from either instance, changes nothing.
    const again = await Promise.all(
      [first.authUrl, second.authUrl].map((base) => sendJson('POST', `${base}/v1/tasks/${task.task_id}/fail`, undefined, bearer)),
    );
    for (const response of again) expect(response.body.status).toBe('completed');
  });

  it('issues nothing, and records what happened, when the task ends between the decision and a batch sent as one message', async () => {
    // An instance of its own: the others' one-message attempts failed as they took turns above.
    const third = await startSecondInstance(first);
    try {
      const exchange = async (taskToken: string) =>
        postForm(`${third.authUrl}/oauth2/token`, {
          ...exchangeFields(taskToken, PAYOUT_REQUEST),
          ...(await clientAuthFields(world.agent.id, world.agent.key, first.issuer)),
        });
      const task = await createTask(first, world.orchestrator);
      expect((await exchange(task.task_token)).status).toBe(200); // the instance knows the chain head
      const oneMessage = async (outcome: string) => {
        const { body } = await third.runtime.metrics.render();
        return Number(new RegExp(`writ_audit_one_message_batches_total\\{outcome="${outcome}"\\} (\\d+)`).exec(body)?.[1] ?? 0);
      };
      const failedBefore = await oneMessage('expectation_failed');
      const issuedBefore = await first.runtime.pool.query(`SELECT count(*)::int AS n FROM audit_events WHERE task_id = $1 AND type = 'token.issued'`, [
        task.task_id,
      ]);
      // The orchestrator's end of the task, held open: the exchange reads the task as active,
      // is allowed, and its issuing statement waits for this row.
      const holder = await first.runtime.pool.connect();
      try {
        await holder.query('BEGIN');
        await holder.query('SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE', [task.task_id]);
        const pending = exchange(task.task_token);
        await waitForLockWaiter(first.runtime.pool, 'the exchange never waited for the task row');
        await holder.query(`UPDATE tasks SET status = 'completed', ended_at = now() WHERE id = $1`, [task.task_id]);
        await holder.query('COMMIT');
        const refused = await pending;
        expect(refused.status).toBe(400);
        expect(refused.body.error).toBe('invalid_grant');
      } finally {
        holder.release();
      }
      // The message that expected a recorded credential rolled back whole; the batch was written
      // again with what happened: no credential, no token.issued.
      expect(await oneMessage('expectation_failed')).toBe(failedBefore + 1);
      expect(await liveCredentials(task.task_id)).toBe(1);
      const issuedAfter = await first.runtime.pool.query(`SELECT count(*)::int AS n FROM audit_events WHERE task_id = $1 AND type = 'token.issued'`, [
        task.task_id,
      ]);
      expect(issuedAfter.rows[0].n).toBe(issuedBefore.rows[0].n);
      expect((await first.runtime.audit.verify()).valid).toBe(true);
    } finally {
      await third.close();
    }
  });

  it('records no credential authenticated with an agent key removed while exchanges with it race the removal on both instances', async () => {
    const agent = await seedAgent(first.runtime.pool, 'agent-rekeyed');
    await first.runtime.pool.query(`UPDATE orchestrators SET allowed_agents = array_append(allowed_agents, $1) WHERE id = $2`, [
      agent.id,
      world.orchestrator.id,
    ]);
    await retagRow(first.runtime.pool, first.runtime.rowIntegrity, 'orchestrators', world.orchestrator.id);
    const task = await createTask(first, world.orchestrator, { agent_id: agent.id });
    // Warm: both instances authenticate the agent and hold its registration.
    for (const n of [0, 1]) expect((await exchangeAt(n, task.task_token, PAYOUT_REQUEST, {}, agent)).status).toBe(200);
    const replacement = await createClientKey();
    const [removed, ...exchanges] = await Promise.all([
      sendJson('PATCH', `${first.adminUrl}/v1/agents/${agent.id}`, { jwks: jwksOf(replacement) }, first.adminToken),
      ...Array.from({ length: 16 }, (_, n) => exchangeAt(n, task.task_token, PAYOUT_REQUEST, {}, agent)),
    ]);
    expect(removed.status).toBe(200);
    for (const exchange of exchanges) expect([200, 401]).toContain(exchange.status);
    // Audited transactions take the chain head first and write only once they hold it, so their
    // transaction ids follow their commit order. A credential recorded by a later transaction than
    // the one that removed the key would have been authenticated with a removed key; one recorded
    // by the same transaction (a batch of one instance holds both) was written before the removal in it.
    const { rows } = await first.runtime.pool.query<{ later: string; issued: string }>(
      `SELECT count(*) FILTER (WHERE t.xmin::text::bigint > a.xmin::text::bigint) AS later, count(*) AS issued
         FROM access_tokens t JOIN agents a ON a.id = t.subject WHERE a.id = $1`,
      [agent.id],
    );
    expect(Number(rows[0].later)).toBe(0);
    expect(Number(rows[0].issued)).toBe(2 + exchanges.filter((exchange) => exchange.status === 200).length);
    for (const n of [0, 1]) expect((await exchangeAt(n, task.task_token, PAYOUT_REQUEST, {}, agent)).status).toBe(401);
  });

  it('ends a task once when complete, fail and an admin revoke race', async () => {
    const task = await createTask(first, world.orchestrator);
    const bearer = await tasksToken(first, world.orchestrator);
    const results = await Promise.all([
      sendJson('POST', `${first.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, bearer),
      sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/fail`, undefined, bearer),
      sendJson('POST', `${first.adminUrl}/v1/tasks/${task.task_id}/revoke`, { reason: 'race' }, first.adminToken),
    ]);
    for (const result of results) expect(result.status).toBeLessThan(300);
    await first.runtime.audit.drain();
    await second.runtime.audit.drain();
    const { rows } = await first.runtime.pool.query(
      `SELECT type FROM audit_events WHERE task_id = $1 AND type IN ('task.completed', 'task.failed', 'task.revoked')`,
      [task.task_id],
    );
    expect(rows).toHaveLength(1);
    expect(`task.${(await taskRow(task.task_id)).status}`).toBe(rows[0].type);
  });

  describe('approvals', () => {
    beforeAll(async () => {
      for (const services of [first, second]) {
        await requireApprovalAbove(services, 10000);
      }
    });
    const admin = (path: string, body: unknown = {}) => sendJson('POST', `${first.adminUrl}${path}`, body, first.adminToken);

    it('lets exactly one of a racing approve and deny win, and spends an approval on exactly one credential', async () => {
      const task = await createTask(first, world.orchestrator);
      const pending = await exchangeAt(0, task.task_token, payoutUpTo(42000));
      expect(pending.body.error).toBe('authorization_pending');
      const id: string = pending.body.approval_id;

      const decided = await Promise.all([admin(`/v1/approvals/${id}/approve`), admin(`/v1/approvals/${id}/deny`), admin(`/v1/approvals/${id}/approve`)]);
      const winners = decided.filter((response) => response.status === 200);
      expect(winners).toHaveLength(1);
      if (winners[0].body.status !== 'approved') return;

      const uses = await Promise.all(Array.from({ length: 10 }, (_, n) => exchangeAt(n, task.task_token, payoutUpTo(42000), { approval_id: id })));
      expect(uses.filter((response) => response.status === 200)).toHaveLength(1);
      expect(await liveCredentials(task.task_id)).toBe(1);
    });

    it('does not spend an approval on a task ended while its exchange was in flight', async () => {
      const task = await createTask(first, world.orchestrator);
      const pending = await exchangeAt(0, task.task_token, payoutUpTo(42000));
      const id: string = pending.body.approval_id;
      expect((await admin(`/v1/approvals/${id}/approve`)).status).toBe(200);
      const bearer = await tasksToken(first, world.orchestrator);
      await Promise.all([
        sendJson('POST', `${second.authUrl}/v1/tasks/${task.task_id}/complete`, undefined, bearer),
        ...Array.from({ length: 4 }, (_, n) => exchangeAt(n, task.task_token, payoutUpTo(42000), { approval_id: id })),
      ]);
      expect(await liveCredentials(task.task_id)).toBe(0);
      const { rows } = await first.runtime.pool.query('SELECT status FROM approvals WHERE id = $1', [id]);
      const issued = Number((await first.runtime.pool.query('SELECT count(*) FROM access_tokens WHERE task_id = $1', [task.task_id])).rows[0].count);
      // Used only if a credential was issued (and then revoked by the completion).
      expect(rows[0].status).toBe(issued === 1 ? 'used' : 'approved');
    });
  });

  describe('client assertion replay, its jti spent with the credential in the issuing batch', () => {
    const countOf = async (sql: string, values: unknown[]) => Number((await first.runtime.pool.query(sql, values)).rows[0].count);

    it('issues exactly one credential when one assertion is replayed in parallel on both instances', async () => {
      const task = await createTask(first, world.orchestrator);
      const auth = await clientAuthFields(world.agent.id, world.agent.key, first.issuer);
      const results = await Promise.all(
        Array.from({ length: 12 }, (_, n) =>
          postForm(`${n % 2 ? second.authUrl : first.authUrl}/oauth2/token`, { ...exchangeFields(task.task_token, payoutUpTo(5000)), ...auth }),
        ),
      );
      expect(results.filter((result) => result.status === 200)).toHaveLength(1);
      for (const result of results.filter((result) => result.status !== 200)) {
        expect(result.status).toBe(401);
        expect(result.body.error).toBe('invalid_client');
      }
      expect(await countOf('SELECT count(*) FROM access_tokens WHERE task_id = $1', [task.task_id])).toBe(1);
      await first.runtime.audit.drain();
      await second.runtime.audit.drain();
      expect(await countOf(`SELECT count(*) FROM audit_events WHERE task_id = $1 AND type = 'token.issued'`, [task.task_id])).toBe(1);
    });

    it('issues exactly one credential when the replays land in one instance (and one batch)', async () => {
      const task = await createTask(first, world.orchestrator);
      const auth = await clientAuthFields(world.agent.id, world.agent.key, first.issuer);
      const results = await Promise.all(
        Array.from({ length: 12 }, () => postForm(`${first.authUrl}/oauth2/token`, { ...exchangeFields(task.task_token, payoutUpTo(5000)), ...auth })),
      );
      expect(results.filter((result) => result.status !== 401).map((result) => [result.status, result.body.error_description])).toEqual([[200, undefined]]);
      expect(await countOf('SELECT count(*) FROM access_tokens WHERE task_id = $1', [task.task_id])).toBe(1);
    });

    it('never counts a replayed refused assertion against the task (no quarantine by replays)', async () => {
      const task = await createTask(first, world.orchestrator);
      const auth = await clientAuthFields(world.agent.id, world.agent.key, first.issuer);
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, n) =>
          postForm(`${n % 2 ? second.authUrl : first.authUrl}/oauth2/token`, { ...exchangeFields(task.task_token, EVIL), ...auth }),
        ),
      );
      expect(results.filter((result) => result.status === 400 && result.body.error === 'invalid_authorization_details')).toHaveLength(1);
      expect(results.filter((result) => result.status === 401 && result.body.error === 'invalid_client')).toHaveLength(7);
      const row = await taskRow(task.task_id);
      expect(row).toMatchObject({ status: 'active', refusals: 1, out_of_purpose_requests: 1 });
    });

    it('spends the assertion of a request refused before issuance, so that its replay is refused as one', async () => {
      const task = await createTask(first, world.orchestrator);
      const auth = await clientAuthFields(world.agent.id, world.agent.key, first.issuer);
      // Refused before any policy decision: a malformed authorization_details.
      const refused = await postForm(`${first.authUrl}/oauth2/token`, { ...exchangeFields(task.task_token, [{ type: 'connector' }]), ...auth });
      expect(refused.status).toBe(400);
      const replay = await postForm(`${second.authUrl}/oauth2/token`, { ...exchangeFields(task.task_token, payoutUpTo(5000)), ...auth });
      expect(replay.status).toBe(401);
      expect(replay.body.error).toBe('invalid_client');
      expect(await liveCredentials(task.task_id)).toBe(0);
    });
  });
});
